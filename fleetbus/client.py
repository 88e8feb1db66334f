"""The CLI's way to the hub: its HTTP API, with a bearer token.

Every command that talks to a hub goes through `HubClient`, so the CLI works the same against a
hub on this machine and one across the network, and never needs NATS credentials. Which hub and
which token, in order:

1. `--server URL` / `--token T` on the command line;
2. `FLEETBUS_SERVER` / `FLEETBUS_TOKEN` in the environment;
3. the data dir of a hub started by `fleetbus up` (`--data-dir`, default `./.fleetbus`): its
   `hub.json` says where the API listens and `admin.token` holds the admin token.

Which project a command acts in: `--project P`, else `FLEETBUS_PROJECT`, else the token's own
project (the `default` project for org-level tokens). It goes as the `X-Fleetbus-Project`
header.

A hub served by several API processes (`fleetbus api`) is given as several URLs
(`--server URL1,URL2`, `--server` repeated, or commas in `FLEETBUS_SERVER`): a request goes to
the one that answered last, and on to the next when it cannot be reached. A request that may
have arrived (a write whose connection broke or timed out after it was sent) is not sent again
elsewhere: its failure is reported, so nothing is done twice.

Plain `urllib` (no HTTP library in the edge install); errors come back as one clear line.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetbus.api_tls import client_opener
from fleetbus.datadir import DEFAULT_DATA_DIR, DataDir
from fleetbus.errors import HubRequestFailed, HubUnreachable

ADMIN_TOKEN_FILE = "admin.token"
SERVER_ENV = "FLEETBUS_SERVER"
TOKEN_ENV = "FLEETBUS_TOKEN"
PROJECT_ENV = "FLEETBUS_PROJECT"
PROJECT_HEADER = "X-Fleetbus-Project"
CA_FILE_ENV = "FLEETBUS_CA_FILE"
FINGERPRINT_ENV = "FLEETBUS_TLS_FINGERPRINT"
Params = Mapping[str, str | int | float | bool | list[str] | None]


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    """`--server`, `--token` and `--data-dir`: how a command finds the hub."""
    group = parser.add_argument_group("hub")
    group.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="URL[,URL...]",
        help=f"hub API, e.g. http://hub:8080; several API processes of one hub: commas or "
        f"--server again, tried in turn (default: ${SERVER_ENV}, else the local hub)",
    )
    group.add_argument(
        "--token",
        default=None,
        metavar="T",
        help=f"bearer token (default: ${TOKEN_ENV}, else the local hub's admin token)",
    )
    group.add_argument(
        "--project",
        default=None,
        metavar="P",
        help=f"the project to act in (default: ${PROJECT_ENV}, else the token's own project, "
        "else default)",
    )
    group.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"trust the hub's HTTPS certificate if this CA signed it (default: ${CA_FILE_ENV}, "
        "else the system's CAs)",
    )
    group.add_argument(
        "--tls-fingerprint",
        default=None,
        metavar="SHA256",
        help="accept only the hub certificate with this SHA-256 fingerprint, as `fleetbus up` "
        f"prints it (default: ${FINGERPRINT_ENV}, else the local hub's)",
    )
    if not any(action.dest == "data_dir" for action in parser._actions):
        group.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            metavar="D",
            help="data dir of a local hub started by `fleetbus up` (default ./.fleetbus)",
        )


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class ServerEvent:
    """One Server-Sent Event."""

    data: str
    event: str = "message"
    id: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


UNREACHED_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Requests that may be sent to another API process after a connection broke mid-way."""


def server_urls(given: str | list[str] | None) -> list[str]:
    """The API URLs in `--server` values or `FLEETBUS_SERVER` (commas, repeats), in order,
    each once."""
    if given is None:
        return []
    values = [given] if isinstance(given, str) else given
    urls = [url.strip().rstrip("/") for value in values for url in value.split(",")]
    return list(dict.fromkeys(url for url in urls if url))


def never_arrived(error: BaseException) -> bool:
    """Whether a failed request certainly never reached the server (refused, no route, no
    such host): then any request may be sent to the next API process."""
    reason = getattr(error, "reason", error)
    return isinstance(reason, ConnectionRefusedError | socket.gaierror) or (
        isinstance(reason, OSError) and reason.errno in UNREACHED_ERRNOS
    )


class HubClient:
    def __init__(
        self,
        server: str | list[str],
        token: str | None,
        *,
        timeout: float = 60.0,
        ca_file: Path | None = None,
        fingerprint: str | None = None,
        project: str | None = None,
    ) -> None:
        self.servers = server_urls(server)
        if not self.servers:
            raise HubUnreachable("no hub API URL given (--server)")
        self._current = 0
        self.token = token
        self.project = project
        self.timeout = timeout
        try:
            self._opener = client_opener(fingerprint=fingerprint, ca_file=ca_file)
        except ValueError as e:
            raise HubUnreachable(f"--tls-fingerprint: {e}") from e
        except (OSError, ssl.SSLError) as e:
            raise HubUnreachable(f"--ca-file {ca_file}: not a readable PEM CA file ({e})") from e

    @property
    def server(self) -> str:
        """The API URL requests go to first: the one that answered last."""
        return self.servers[self._current]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HubClient:
        server: str | list[str] | None = (
            getattr(args, "server", None) or os.environ.get(SERVER_ENV) or None
        )
        token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
        project = getattr(args, "project", None) or os.environ.get(PROJECT_ENV) or None
        ca_file = getattr(args, "ca_file", None) or os.environ.get(CA_FILE_ENV) or None
        fingerprint = (
            getattr(args, "tls_fingerprint", None) or os.environ.get(FINGERPRINT_ENV) or None
        )
        data_dir = Path(getattr(args, "data_dir", None) or DEFAULT_DATA_DIR)
        if server is None:
            info = DataDir(data_dir).read_hub_info()
            server = loopback(str(info["http_url"]))
            if token is None:
                token = read_token_file(data_dir / ADMIN_TOKEN_FILE)
            if fingerprint is None and ca_file is None and info.get("api_tls_fingerprint"):
                fingerprint = str(info["api_tls_fingerprint"])
        return cls(
            server,
            token,
            ca_file=Path(ca_file) if ca_file else None,
            fingerprint=fingerprint,
            project=project,
        )

    # --- requests -------------------------------------------------------------------------

    def get(self, path: str, params: Params | None = None) -> Any:
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None, params: Params | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        return self._json(
            self.request("POST", path, params=params, body=data, content_type="application/json")
        )

    def put(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        return self._json(self.request("PUT", path, body=data, content_type="application/json"))

    def delete(self, path: str, params: Params | None = None) -> Any:
        return self._json(self.request("DELETE", path, params=params))

    def post_multipart(
        self, path: str, fields: Mapping[str, str], files: Mapping[str, Upload]
    ) -> Any:
        body, content_type = encode_multipart(fields, files)
        return self._json(self.request("POST", path, body=body, content_type=content_type))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        with self.open(
            method,
            path,
            params=params,
            body=body,
            content_type=content_type,
            headers=headers,
            timeout=timeout,
        ) as response:
            data: bytes = response.read()
            return data

    def open(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return the open response (for streaming); raise on an error.

        With several API URLs, one that cannot be reached passes the request on to the next
        (a request that may have arrived only if it is idempotent)."""
        failures: list[str] = []
        for step in range(len(self.servers)):
            index = (self._current + step) % len(self.servers)
            server = self.servers[index]
            try:
                response = self._open_on(
                    server, method, path, params, body, content_type, headers, timeout
                )
            except HubUnreachable as e:
                cause = e.__cause__
                failures.append(str(e))
                movable = cause is not None and (
                    never_arrived(cause) or method.upper() in IDEMPOTENT_METHODS
                )
                tls = isinstance(getattr(cause, "reason", cause), ssl.SSLError)
                if tls or not movable or len(self.servers) == 1:
                    raise
                continue
            self._current = index
            return response
        raise HubUnreachable(
            f"none of the hub's {len(self.servers)} API URLs answered: " + "; ".join(failures)
        )

    def _open_on(
        self,
        server: str,
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Any:
        url = server + path + query_string(params)
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self.project:
            request.add_header(PROJECT_HEADER, self.project)
        if content_type:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise self._failure(method, path, e) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError):
                raise HubUnreachable(
                    f"the hub at {server} failed TLS verification: "
                    f"{getattr(reason, 'verify_message', None) or reason}; pass --ca-file or "
                    "--tls-fingerprint (as `fleetbus up` printed it)"
                ) from e
            raise HubUnreachable(f"cannot reach the hub at {server}: {reason}") from e

    def _failure(self, method: str, path: str, error: urllib.error.HTTPError) -> HubRequestFailed:
        raw = error.read()
        try:
            answer = json.loads(raw)
            message = str(answer.get("error") or raw.decode(errors="replace"))
            detail = answer.get("context")
        except (ValueError, AttributeError):
            message, detail = raw.decode(errors="replace").strip() or error.reason, None
        if error.code == 401 and not self.token:
            message += f" (pass --token or set ${TOKEN_ENV})"
        return HubRequestFailed(error.code, message, detail)

    @staticmethod
    def _json(data: bytes) -> Any:
        return json.loads(data) if data else None

    # --- live events ----------------------------------------------------------------------

    def stream(
        self, path: str, params: Params | None = None, *, reconnect: bool = True
    ) -> Iterator[ServerEvent]:
        """Server-Sent Events from `path`, resuming after a dropped connection."""
        last_id = ""
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                with self.open("GET", path, params=params, headers=headers) as response:
                    failures = 0
                    for event in parse_sse(response):
                        if event.id:
                            last_id = event.id
                        yield event
            except (HubUnreachable, ConnectionError, TimeoutError) as e:
                failures += 1
                if not reconnect or failures > 5:
                    raise HubUnreachable(f"lost the event stream from {self.server}: {e}") from e
            if not reconnect:
                return
            time.sleep(min(0.5 * 2**failures, 5.0))


def parse_sse(lines: Any) -> Iterator[ServerEvent]:
    """Server-Sent Events from an iterable of raw lines (a urllib response)."""
    data: list[str] = []
    event = "message"
    event_id = ""
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(data="\n".join(data), event=event, id=event_id)
            data, event = [], "message"
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            event_id = value


def encode_multipart(fields: Mapping[str, str], files: Mapping[str, Upload]) -> tuple[bytes, str]:
    boundary = "fleetbus-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, upload in files.items():
        filename = upload.filename.replace('"', "")
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: {upload.content_type}\r\n\r\n'
            ).encode()
            + upload.content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def query_string(params: Params | None) -> str:
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None or value == [] or value is False:
            continue
        if isinstance(value, list):
            pairs.extend((key, str(item)) for item in value)
        elif value is True:
            pairs.append((key, "true"))
        else:
            pairs.append((key, str(value)))
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def loopback(url: str) -> str:
    """A hub listening on every address is reached on loopback from this machine."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if parsed.hostname != "::" else "[::1]"
        return parsed._replace(netloc=f"{host}:{parsed.port}").geturl()
    return url


def read_token_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise HubRequestFailed(
            401, f"cannot read the admin token {path}: {e.strerror}; pass --token"
        ) from e
