"""Leader election on a real Lease: one leader at a time, a silent leader is replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cluster_controller.kube import Kube
from cluster_controller.leader import LeaderElection
from kube_contract.resources import LEASE
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


async def test_only_one_controller_leads_until_the_leader_goes_silent(
    kube: Kube, kube_namespace: str
) -> None:
    clock = Clock()
    first = LeaderElection(kube, namespace=kube_namespace, identity="a", clock=clock)
    second = LeaderElection(kube, namespace=kube_namespace, identity="b", clock=clock)

    assert await first.try_lead()
    assert not await second.try_lead()
    assert await first.try_lead()

    clock.now += timedelta(seconds=first.lease_seconds + 1)

    assert await second.try_lead()
    assert not await first.try_lead()
    lease = await kube.get(LEASE, "fleetbus-controller", kube_namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
