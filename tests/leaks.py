"""What a test left open: sockets and transports that only the garbage collector would close."""

from __future__ import annotations

import gc
import warnings


def unclosed_sockets() -> list[str]:
    """The ResourceWarnings of a full garbage collection now ("unclosed socket", "unclosed
    transport"), so a leak fails the test that made it instead of whichever test runs when
    the collector happens to find it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
