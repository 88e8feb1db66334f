#!/usr/bin/env bash
# Builds kube-envtest (embedded etcd + kube-apiserver in one process) to
# $REPO/.cache/envtest/bin/kube-envtest. Does nothing when the binary was
# already built from the same go.mod, go.sum and *.go files: a sha256 of
# those inputs (and of the Go version) is kept next to the binary.
#
# Environment: GO (default: go from PATH, else /usr/local/go/bin/go),
# ENVTEST_FORCE=1 rebuilds unconditionally.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin_dir="$repo/.cache/envtest/bin"
bin="$bin_dir/kube-envtest"
stamp="$bin.sha256"

go_bin="${GO:-}"
if [[ -z "$go_bin" ]]; then
    if command -v go >/dev/null 2>&1; then
        go_bin="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        go_bin=/usr/local/go/bin/go
    else
        echo "build.sh: no Go toolchain found (set GO=/path/to/go)" >&2
        exit 1
    fi
fi

inputs_digest() {
    (
        cd "$here"
        "$go_bin" env GOVERSION
        # Sorted so the digest does not depend on directory order.
        find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print \
            | LC_ALL=C sort \
            | while read -r f; do sha256sum "$f"; done
    ) | sha256sum | cut -d' ' -f1
}

want="$(inputs_digest)"
if [[ "${ENVTEST_FORCE:-}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
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

mkdir -p "$bin_dir"
echo "building kube-envtest (takes several minutes on a cold Go build cache)..."
rm -f "$stamp"
(
    cd "$here"
    # -mod=mod: go.mod/go.sum are committed complete; this only avoids
    # failing on a missing vendor directory or an outer GOFLAGS setting.
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
        "$go_bin" build -buildvcs=false -trimpath -ldflags="$ldflags" -o "$bin.tmp" .
)
mv -f "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "built $bin ($(du -h "$bin" | cut -f1))"
