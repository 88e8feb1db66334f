"""One stream of the hub as the JetStream adapters reach it: its API and its administration.

`StreamApi` is what appends and reads share: the connection, the stream's name and JetStream
domain (so its API prefix), the timeout and retry budget of each request, and the requests
that administer the stream (create or update it, read its info, find the last message on a
subject, which is an aggregate's version).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from events.connection import request
from events.errors import AppendRefused, EventLogUnavailable
from events.streams import MANAGED_ELSEWHERE

log = logging.getLogger(__name__)

CLUSTER_SETTLING = {
    10005: "no suitable peers for placement",
    10008: "JetStream system temporarily unavailable",
    10023: "insufficient resources",
}
"""JetStream API errors a cluster answers while it forms or elects a leader: a stream create
that gets one succeeds once every peer has reported to the meta leader."""

SETTLE_WITHIN_S = 60.0
"""How long creating the hub's streams waits for a forming cluster before giving up."""


class ClusterSettling(AppendRefused):
    """A stream create refused with one of `CLUSTER_SETTLING`: worth asking again."""


@dataclass
class StreamApi:
    nc: NatsClient
    stream: str
    domain: str | None = None
    timeout: float = 5.0
    attempts: int = 5
    prefix: str = field(init=False)
    """`$JS.<domain>.API`, or `$JS.API` in the connection's own domain."""
    js: JetStreamContext = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = f"$JS.{self.domain}.API" if self.domain else "$JS.API"
        self.js = self.nc.jetstream(domain=self.domain, timeout=self.timeout)

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        *,
        retry: bool = True,
    ) -> Msg:
        """`events.connection.request` with this stream's timeout and attempts (one attempt
        for a request that must not be repeated, like the commit of an atomic batch)."""
        return await request(
            self.nc,
            subject,
            payload,
            headers,
            reply_within=self.timeout,
            attempts=self.attempts if retry else 1,
        )

    async def api_request(self, subject: str, body: dict[str, Any] | None = None) -> Any:
        """One JetStream API request; errors come back as `AppendRefused`/`EventLogUnavailable`."""
        payload = orjson.dumps(body) if body is not None else b""
        reply = await self.request(f"{self.prefix}.{subject}", payload, None)
        answer = orjson.loads(reply.data)
        if isinstance(answer, dict) and answer.get("error"):
            err = answer["error"]
            raise AppendRefused(
                f"JetStream API {subject}: {err.get('description')} (code {err.get('err_code')})"
            )
        return answer

    async def api_send(
        self, subject: str, body: dict[str, Any] | None = None, *, answer_within: float
    ) -> Any | None:
        """One JetStream API request, sent once, its answer awaited at most `answer_within`
        seconds: the answer, or None when none came in time (the server may still act on
        the request). Refusals come back as `AppendRefused`, a failure to send as
        `EventLogUnavailable`."""
        payload = orjson.dumps(body) if body is not None else b""
        try:
            reply = await self.nc.request(
                f"{self.prefix}.{subject}", payload, timeout=answer_within
            )
        except nats.errors.TimeoutError:
            return None
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"request on {subject} not sent: {e}") from e
        answer = orjson.loads(reply.data) if reply.data else None
        if isinstance(answer, dict) and answer.get("error"):
            err = answer["error"]
            raise AppendRefused(
                f"JetStream API {subject}: {err.get('description')} (code {err.get('err_code')})"
            )
        return answer

    async def ensure_stream(self, config: dict[str, Any], *, keep: Sequence[str] = ()) -> None:
        """Create the stream, or bring an existing one to `config`. Idempotent.

        The fields named in `keep` keep an existing stream's values (another component
        manages them), whatever `config` says."""
        name = config["name"]
        reply = await self.request(
            f"{self.prefix}.STREAM.CREATE.{name}", orjson.dumps(config), None
        )
        answer = orjson.loads(reply.data)
        error = answer.get("error") if isinstance(answer, dict) else None
        if not error:
            return
        if error.get("err_code") in CLUSTER_SETTLING:
            raise ClusterSettling(f"stream {name} not created yet: {error.get('description')}")
        if error.get("err_code") == 10058:  # stream name already in use (config differs)
            if keep:
                current = (await self.stream_info(name))["config"]
                config = {key: value for key, value in config.items() if key not in keep}
                config |= {key: current[key] for key in keep if key in current}
            await self.api_request(f"STREAM.UPDATE.{name}", config)
            return
        raise AppendRefused(f"cannot create stream {name}: {error.get('description')}")

    async def ensure_streams(
        self,
        configs: Sequence[dict[str, Any]],
        *,
        keep: Mapping[str, Sequence[str]] = MANAGED_ELSEWHERE,
        settle_within: float = SETTLE_WITHIN_S,
    ) -> None:
        """`ensure_stream` for each config; `keep` names, per stream, the fields to keep.

        A cluster still forming (a refusal in `CLUSTER_SETTLING`, or no answer at all) is asked
        again, with pauses doubling to 2 s, for up to `settle_within` seconds."""
        for config in configs:
            await self._ensure_settled(config, keep.get(config["name"], ()), settle_within)

    async def _ensure_settled(
        self, config: dict[str, Any], keep: Sequence[str], settle_within: float
    ) -> None:
        deadline = time.monotonic() + settle_within
        pause = 0.1
        while True:
            try:
                await self.ensure_stream(config, keep=keep)
                await self._answered_by_a_leader(config["name"])
                return
            except (ClusterSettling, EventLogUnavailable) as e:
                if time.monotonic() + pause > deadline:
                    raise ClusterSettling(
                        f"cannot create stream {config['name']}: JetStream did not settle "
                        f"within {settle_within:g} s ({e})"
                    ) from e
                log.warning("%s; asking again in %.1f s", e, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _answered_by_a_leader(self, name: str) -> None:
        """Raise `ClusterSettling` until the stream has a leader that answers its info request.

        A replicated stream exists as soon as the meta leader has placed it, but nothing it
        holds can be read or written until its own group has elected a leader."""
        try:
            info = await self.stream_info(name)
        except AppendRefused as e:
            raise ClusterSettling(f"stream {name} not answering yet: {e}") from e
        cluster = info.get("cluster") or {}
        if cluster and not cluster.get("leader"):
            raise ClusterSettling(f"stream {name} has no leader yet")

    async def stream_info(self, stream: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = await self.api_request(f"STREAM.INFO.{stream or self.stream}")
        return info

    async def last_sequence(self) -> int:
        """The sequence of the newest message in the stream (0 when empty)."""
        info = await self.stream_info()
        return int(info["state"]["last_seq"])

    async def subject_version(self, subject: str) -> int:
        """The stream sequence of the last message on `subject`, 0 if there is none.

        This is the `expected` value for the next conditional append to that aggregate.
        """
        _, seq = await self.last_message_id(subject)
        return seq

    async def last_message_id(self, subject: str) -> tuple[str | None, int]:
        reply = await self.request(
            f"{self.prefix}.DIRECT.GET.{self.stream}",
            orjson.dumps({"last_by_subj": subject}),
            None,
        )
        headers = reply.headers or {}
        if headers.get("Status") not in (None, "200") or "Nats-Sequence" not in headers:
            return None, 0
        return headers.get("Nats-Msg-Id"), int(headers["Nats-Sequence"])
