#!/usr/bin/env bash
# Builds the test cluster's binaries into $REPO/.cache/envtest/bin:
#
#   kube-envtest  embedded etcd + kube-apiserver + kube-controller-manager +
#                 kube-scheduler in one process (this directory's module,
#                 pinned to k8s.io/kubernetes in go.mod)
#   kwok          the node/pod simulator, sigs.k8s.io/kwok/cmd/kwok at
#                 $KWOK_VERSION, built in its own module (its client-go need
#                 not match k8s.io/kubernetes)
#
# Each binary is rebuilt only when its inputs changed: a sha256 of them (and of
# the Go version) is kept next to it as <binary>.sha256. For kube-envtest the
# inputs are go.mod, go.sum, *.go and kwok/*.yaml (embedded); for kwok, its
# module version.
#
# Environment: GO (default: go from PATH, else /usr/local/go/bin/go),
# ENVTEST_FORCE=1 rebuilds unconditionally.
set -euo pipefail

KWOK_VERSION=v0.8.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin_dir="$repo/.cache/envtest/bin"
bin="$bin_dir/kube-envtest"
stamp="$bin.sha256"

# shellcheck source=../find-go.sh
source "$here/../find-go.sh"

inputs_digest() {
    (
        cd "$here"
        "$go_bin" env GOVERSION
        # Sorted so the digest does not depend on directory order.
        { find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print;
          find ./kwok -maxdepth 1 -type f -name '*.yaml' -print; } \
            | LC_ALL=C sort \
            | while read -r f; do sha256sum "$f"; done
    ) | sha256sum | cut -d' ' -f1
}

up_to_date() { # binary stamp digest
    [[ "${ENVTEST_FORCE:-}" != 1 && -x "$1" && -f "$2" && "$(cat "$2")" == "$3" ]]
}

build_kwok() {
    local kwok="$bin_dir/kwok" kwok_stamp="$bin_dir/kwok.sha256" want
    want="$(printf '%s\n%s\n' "$("$go_bin" env GOVERSION)" "sigs.k8s.io/kwok@$KWOK_VERSION" | sha256sum | cut -d' ' -f1)"
    if up_to_date "$kwok" "$kwok_stamp" "$want"; then
        echo "kwok is up to date: $kwok"
        return
    fi
    echo "building kwok $KWOK_VERSION (a few minutes on a cold Go build cache)..."
    rm -f "$kwok_stamp"
    local gobin
    gobin="$(mktemp -d)"
    # `go install pkg@version` builds in the module's own go.mod, whatever
    # the current directory; -mod must not be forced for it.
    (
        cd "$here"
        GOFLAGS="${GOFLAGS:+${GOFLAGS//-mod=mod/}}" GOBIN="$gobin" CGO_ENABLED=0 \
            nice "$go_bin" install -buildvcs=false -trimpath -ldflags="-s -w" \
            "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    )
    mv -f "$gobin/kwok" "$kwok"
    rmdir "$gobin"
    echo "$want" >"$kwok_stamp"
    echo "built $kwok ($(du -h "$kwok" | cut -f1))"
}

mkdir -p "$bin_dir"
build_kwok

want="$(inputs_digest)"
if up_to_date "$bin" "$stamp" "$want"; then
    echo "kube-envtest is up to date: $bin"
    exit 0
fi

# Stamp /version like a release build, so clients' version-skew checks see
# the real version instead of "v0.0.0-master".
k8s_version="$(cd "$here" && GOFLAGS=-mod=mod "$go_bin" list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$k8s_minor -X $vpkg.gitTreeState=clean"

echo "building kube-envtest (takes several minutes on a cold Go build cache)..."
rm -f "$stamp"
(
    cd "$here"
    # -mod=mod: go.mod/go.sum are committed complete; this only avoids
    # failing on a missing vendor directory or an outer GOFLAGS setting.
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
        nice "$go_bin" build -buildvcs=false -trimpath -ldflags="$ldflags" -o "$bin.tmp" .
)
mv -f "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "built $bin ($(du -h "$bin" | cut -f1))"
