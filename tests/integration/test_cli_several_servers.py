"""The CLI given several API URLs of one hub (`--server A,B`, `--server` repeated,
`FLEETBUS_SERVER=A,B`): an unreachable one passes the request on, a write that may have
arrived is never sent twice.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.auth import Role
from events.store import EventStore
from fleetbus.cli import main
from fleetbus.client import HubClient, server_urls
from fleetbus.errors import HubUnreachable
from fleetbus.natsserver import free_port
from tests.integration.api_harness import live_api


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


class HangUp:
    """A server that takes each request and closes the connection without answering: a
    request sent to it may have been acted on."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def hang_up() -> Iterator[HangUp]:
    server = HangUp()
    try:
        yield server
    finally:
        server.close()


def test_server_urls_come_from_commas_and_repeats_in_order_each_once() -> None:
    assert server_urls(["http://a:1,http://b:2/", "http://a:1", " http://c:3 "]) == [
        "http://a:1",
        "http://b:2",
        "http://c:3",
    ]
    assert server_urls("http://a:1") == ["http://a:1"]
    with pytest.raises(HubUnreachable, match="no hub API URL given"):
        HubClient(" , ", None)


async def test_the_cli_passes_over_an_api_url_nobody_listens_on(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with live_api(event_store, tmp_path / "hub") as api:
        admin = api.tokens[Role.admin]
        argv = ["--server", dead, "--server", api.url, "--token", admin]
        assert await cli("token", "create", "--role", "viewer", "--name", "ci", *argv) == 0
        capsys.readouterr()
        assert await cli("token", "ls", "--server", f"{dead},{api.url}", "--token", admin) == 0
        assert "ci" in capsys.readouterr().out
        client = HubClient([dead, api.url], admin)
        whoami = await asyncio.to_thread(client.get, "/api/v1/whoami")
        assert whoami["name"] == "test-admin"
        assert client.server == api.url, "the URL that answered is tried first from then on"
        only_dead = await cli("token", "ls", "--server", dead, "--token", admin)
        assert only_dead == 2
        err = capsys.readouterr().err
        assert f"cannot reach the hub at {dead}" in err
        assert "Traceback" not in err


async def test_a_write_that_may_have_arrived_is_not_sent_to_the_next_url(
    event_store: EventStore, tmp_path: Path, hang_up: HangUp
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        client = HubClient([hang_up.url, api.url], api.tokens[Role.admin])
        with pytest.raises(HubUnreachable, match=f"cannot reach the hub at {hang_up.url}"):
            await asyncio.to_thread(
                client.post, "/api/v1/tokens", {"role": "viewer", "name": "once"}
            )
        assert hang_up.requests == 1
        assert all(r.name != "once" for r in await api.hub.tokens.list()), (
            "the write was not sent again to the other API process"
        )
        # A read may be sent again: it passes on to the API that answers.
        whoami = await asyncio.to_thread(client.get, "/api/v1/whoami")
        assert whoami["role"] == "admin"
        assert hang_up.requests == 2
        created = await asyncio.to_thread(
            client.post, "/api/v1/tokens", {"role": "viewer", "name": "now"}
        )
        assert created["info"]["name"] == "now", "later writes go to the API that answered"
