"""The Go YAML oracle (`infra/yamloracle`, sigs.k8s.io/yaml) as a test helper.

`convert_with_oracle` sends many YAML documents to one run of the oracle and returns, for
each, what Kubernetes makes of it. The binary is built by `make yamloracle` (a prerequisite of
`make test`); without it the tests fail and say so, they never skip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORACLE = Path(__file__).parent.parent / ".cache" / "yamloracle" / "bin" / "yamloracle"


@dataclass(frozen=True)
class OracleResult:
    value: Any
    error: str | None
    strict_error: str | None


def convert_with_oracle(documents: Sequence[str]) -> list[OracleResult]:
    if not ORACLE.is_file():
        pytest.fail(f"{ORACLE} is missing: run `make yamloracle`")
    completed = subprocess.run(
        [str(ORACLE)],
        input=json.dumps(list(documents)).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return [
        OracleResult(
            value=json.loads(json.dumps(item["json"])) if "json" in item else None,
            error=item.get("error"),
            strict_error=item.get("strict_error"),
        )
        for item in json.loads(completed.stdout)
    ]


def comparable(value: Any) -> Any:
    """`value` with booleans told apart from numbers and ints from equal floats not."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        # Beyond 64 bits both sides hold the same float64, written differently.
        return ("number", float(value) if abs(value) >= 2**63 else value)
    if isinstance(value, dict):
        return {key: comparable(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [comparable(inner) for inner in value]
    return value
