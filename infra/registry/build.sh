#!/usr/bin/env bash
# Builds the OCI registry the sources tests push charts to: the CNCF
# distribution registry, github.com/distribution/distribution/v3/cmd/registry
# at $REGISTRY_VERSION, into $REPO/.cache/registry/bin/registry.
#
# The binary is rebuilt only when the module version or the Go version
# changed: a sha256 of both is kept next to it as registry.sha256.
#
# Environment: GO (default: go from PATH, else /usr/local/go/bin/go),
# REGISTRY_FORCE=1 rebuilds unconditionally.
set -euo pipefail

REGISTRY_VERSION=v3.1.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin_dir="$repo/.cache/registry/bin"
bin="$bin_dir/registry"
stamp="$bin.sha256"

# shellcheck source=../find-go.sh
source "$here/../find-go.sh"

want="$(printf '%s\n%s\n' "$("$go_bin" env GOVERSION)" \
    "github.com/distribution/distribution/v3@$REGISTRY_VERSION" | sha256sum | cut -d' ' -f1)"
if [[ "${REGISTRY_FORCE:-}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "registry is up to date: $bin"
    exit 0
fi

echo "building the distribution registry $REGISTRY_VERSION (up to several minutes with empty Go caches)..."
mkdir -p "$bin_dir"
rm -f "$stamp"
gobin="$(mktemp -d)"
# `go install pkg@version` builds in the module's own go.mod whatever the
# current directory; -mod must not be forced for it.
(
    cd "$here"
    GOFLAGS="${GOFLAGS:+${GOFLAGS//-mod=mod/}}" GOBIN="$gobin" CGO_ENABLED=0 \
        nice "$go_bin" install -buildvcs=false -trimpath -ldflags="-s -w" \
        "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
)
mv -f "$gobin/registry" "$bin"
rmdir "$gobin"
echo "$want" >"$stamp"
echo "built $bin ($(du -h "$bin" | cut -f1))"
