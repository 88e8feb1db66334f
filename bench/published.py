"""Scale figures other fleet and GitOps tools have published, with where each was read.

They were measured on their authors' hardware, with their own workloads and definitions; they are
shown beside ours for orientation, never as a like-for-like race. Each entry names the figure of
ours it is closest to, so the report can place them side by side.
"""

from __future__ import annotations

import msgspec


class PublishedFigure(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    what: str
    """What they measured, in their words as closely as a table cell allows."""
    value: str
    scale: str
    hardware: str
    source: str
    """URL of the page the figure was read from."""
    closest: str
    """The figure of ours it is closest to (P1 … P6)."""


PUBLISHED: list[PublishedFigure] = [
    PublishedFigure(
        project="Karmada v1.3",
        what="resource distribution latency, Push mode (template+policy submitted → resource "
        "created on the member cluster)",
        value="p50 706 ms, p90 899 ms, p99 1,298 ms (their SLO: p99 ≤ 2 s)",
        scale="100 member clusters (5,000 fake nodes and 20,000 pods each)",
        hardware="control plane on one 64-vCPU Intel Xeon Gold 6266C VM, 512 GB RAM",
        source="https://karmada.io/blog/2022/10/26/test-report/",
        closest="P1",
    ),
    PublishedFigure(
        project="Karmada v1.3",
        what="resource distribution latency, Pull mode (karmada-agent in each member cluster)",
        value="p50 612 ms, p90 881 ms, p99 989 ms",
        scale="100 member clusters",
        hardware="same as above",
        source="https://karmada.io/blog/2022/10/26/test-report/",
        closest="P1",
    ),
    PublishedFigure(
        project="Karmada v1.3",
        what="karmada-agent footprint in a member cluster",
        value="40m CPU, 266 MiB memory",
        scale="member cluster with 5,000 nodes and 20,000 pods",
        hardware="same as above",
        source="https://karmada.io/blog/2022/10/26/test-report/",
        closest="P5",
    ),
    PublishedFigure(
        project="Flux v2.6",
        what="Mean Time To Production: Kustomizations reconciled after their artifacts were "
        "pushed at once; kustomize-controller peak memory",
        value="100 → 28 s, 32 MiB; 500 → 2 min 2 s, 122 MiB; 1,000 → 4 min 16 s, 175 MiB",
        scale="one cluster, 100 / 500 / 1,000 apps (not a fleet of clusters)",
        hardware="GitHub hosted runner ubuntu-latest-16-cores, Kind with 3 nodes, "
        "kustomize-controller limited to 2 CPU / 1 GiB, concurrency 20",
        source="https://github.com/fluxcd/flux-benchmark/blob/main/RESULTS.md",
        closest="P1",
    ),
    PublishedFigure(
        project="Flux v2.6",
        what="the same for HelmReleases; helm-controller peak memory",
        value="100 → 27 s, 190 MiB; 1,000 → 8 min 12 s, 400 MiB",
        scale="one cluster, 100 / 1,000 HelmReleases",
        hardware="as above, helm-controller 2 CPU / 1 GiB, concurrency 10",
        source="https://github.com/fluxcd/flux-benchmark/blob/main/RESULTS.md",
        closest="P5",
    ),
    PublishedFigure(
        project="Argo CD 2.8",
        what="time to sync 10,000 applications (one 2 KB ConfigMap each) with 10 "
        "application-controller shards",
        value="100 clusters → 9 min; 250 → 9 min; 500 → 11 min",
        scale="100 / 250 / 500 workload clusters",
        hardware="Argo CD on a single m5.2xlarge node (8 vCPU, 32 GiB)",
        source="https://cnoe.io/blog/argo-cd-application-scalability",
        closest="P2",
    ),
    PublishedFigure(
        project="Argo CD",
        what="sync of 5,000 applications per remote cluster (3 clusters) against the client "
        "QPS/burst setting",
        value="61.5 min at QPS 50/burst 100; 18 min at 200/400",
        scale="15,000 applications on 3 remote EKS clusters",
        hardware="central Amazon EKS cluster",
        source="https://cnoe.io/blog/argo-cd-application-scalability",
        closest="P2",
    ),
    PublishedFigure(
        project="Rancher Fleet",
        what="documented controller sizing for deploying 50 applications to 500 clusters "
        "(a requirement, not a measured latency)",
        value="16 vCPU and 64 GB RAM",
        scale="500 downstream clusters, 50 bundles",
        hardware="their scale test used a c5d.12xlarge (48 vCPU, 96 GB) for the controllers",
        source="https://www.suse.com/c/rancher_blog/"
        "scaling-kubernetes-gitops-with-fleet-experiment-results-and-lessons-learnt",
        closest="P6",
    ),
    PublishedFigure(
        project="Rancher Fleet",
        what="design goal of the two-stage pull architecture",
        value="manage 1 million clusters",
        scale="1,000,000 clusters",
        hardware="see the post",
        source="https://rancher.com/blog/2020/scaling-fleet-kubernetes-million-clusters",
        closest="P2",
    ),
]
