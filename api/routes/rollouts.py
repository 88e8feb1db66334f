"""`/api/v1/tasksets/{taskset}/rollout/resume`: go on with a rollout the scheduler halted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import post
from litestar.params import PathParameter

from api.auth import Role, requires
from api.context import Hub
from api.tenancy import Tenant
from registry.rollouts import resume_rollout


class Resumed(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int


@post(
    "/api/v1/tasksets/{taskset:str}/rollout/resume",
    guards=[requires(Role.publisher)],
    tags=["tasksets"],
    summary="Resume a halted rollout (earlier failures no longer count towards its threshold)",
    status_code=200,
)
async def resume(
    hub: Hub, tenant: Tenant, taskset: Annotated[str, PathParameter(max_length=63)]
) -> Resumed:
    event = await resume_rollout(
        hub.store,
        tenant.own("taskset", taskset),
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    return Resumed(taskset=event.taskset, version=event.taskset_version)


ROUTES = [resume]
