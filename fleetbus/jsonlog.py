"""Logs of the long-running processes (hub, scheduler, edge, controller, simulator workers):
one record per line on stderr, in one format for the whole process tree.

`json` (the default): one JSON object per line. Log shippers (Loki, Elasticsearch, journald with
JSON parsing) read these without a grok pattern, and the fields that code passes in `extra=`
(`method`, `path`, `status`, `cluster`, `seq`, ...) arrive as fields rather than as words in a
sentence. `text`: the same records for a terminal (`make run` uses it), one per line as
`<ts> <level> <logger>: <msg> key=value ...`. `--log-format` or `$FLEETBUS_LOG_FORMAT` chooses;
the hub passes its choice on to the worker processes it starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


LOG_FORMATS = ("json", "text")
LOG_FORMAT_ENV = "FLEETBUS_LOG_FORMAT"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"ts", "level", "logger", "msg", ...extra, "exc"}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Formats a record as `<ts> <level> <logger>: <msg> key=value ...` on one line (a
    traceback, when there is one, follows indented)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " ")
        line = f"{_timestamp(record)} {record.levelname.lower():<7} {record.name}: {message}"
        extra = " ".join(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        if extra:
            line += " " + extra
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + part for part in trace.splitlines())
        return line


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return orjson.dumps(text).decode()
    return text


def log_format_from_env(default: str = "json") -> str:
    chosen = os.environ.get(LOG_FORMAT_ENV, default)
    return chosen if chosen in LOG_FORMATS else default


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log_format_from_env(),
        help=f"log lines as json (default) or text (for a terminal); ${LOG_FORMAT_ENV} "
        "sets the default",
    )


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Records to the process's stderr as it is when each one is written, not as it was when
    logging was configured: a caller that replaces `sys.stderr` later still gets the lines, and
    a closed stream left behind is never written to."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """The stream is always the current `sys.stderr`: nothing to set."""


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send every logger's records to stderr in `log_format` (replacing earlier handlers), and
    make it the format of the worker processes this one starts."""
    os.environ[LOG_FORMAT_ENV] = log_format
    handler = StderrHandler()
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)


def configure_json_logging(level: int = logging.INFO) -> None:
    """`configure_logging` in the format `$FLEETBUS_LOG_FORMAT` names (json unless it says text)."""
    configure_logging(log_format_from_env(), level)
