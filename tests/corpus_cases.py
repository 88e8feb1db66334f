"""The real-chart corpus under `tests/corpus` (see its SOURCES.md): what each case is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class ChartCase:
    name: str
    release: str
    namespace: str

    @property
    def directory(self) -> Path:
        return CORPUS / "charts" / self.name


CHARTS = (
    ChartCase("kube-prometheus-stack", "monitoring", "monitoring"),
    ChartCase("cert-manager", "cert-manager", "cert-manager"),
    ChartCase("ingress-nginx", "ingress", "ingress-nginx"),
    ChartCase("argo-cd", "argocd", "argocd"),
    ChartCase("nginx", "web", "web"),
    ChartCase("jaeger-operator", "jaeger", "tracing"),
)
LARGEST_CHART = CHARTS[0]

KUSTOMIZATIONS = (
    CORPUS / "kustomize" / "components" / "overlays" / "community",
    CORPUS / "kustomize" / "components" / "overlays" / "enterprise",
    CORPUS / "kustomize" / "components" / "overlays" / "dev",
    CORPUS / "kustomize" / "generators",
    CORPUS / "kustomize" / "patches",
    CORPUS / "kustomize" / "multibases",
)
