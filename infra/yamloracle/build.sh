#!/usr/bin/env bash
# Builds yamloracle (sigs.k8s.io/yaml: YAML in, JSON out) to
# $REPO/.cache/yamloracle/bin/yamloracle. Does nothing when the binary was
# already built from the same go.mod, go.sum and *.go files: a sha256 of
# those inputs (and of the Go version) is kept next to the binary.
#
# Environment: GO (default: go from PATH, else /usr/local/go/bin/go),
# YAMLORACLE_FORCE=1 rebuilds unconditionally.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin_dir="$repo/.cache/yamloracle/bin"
bin="$bin_dir/yamloracle"
stamp="$bin.sha256"

# shellcheck source=../find-go.sh
source "$here/../find-go.sh"

inputs_digest() {
    (
        cd "$here"
        "$go_bin" env GOVERSION
        find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print \
            | LC_ALL=C sort \
            | while read -r f; do sha256sum "$f"; done
    ) | sha256sum | cut -d' ' -f1
}

want="$(inputs_digest)"
if [[ "${YAMLORACLE_FORCE:-}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "yamloracle is up to date: $bin"
    exit 0
fi

mkdir -p "$bin_dir"
rm -f "$stamp"
(
    cd "$here"
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
        "$go_bin" build -buildvcs=false -trimpath -ldflags="-s -w" -o "$bin.tmp" .
)
mv -f "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "built $bin ($(du -h "$bin" | cut -f1))"
