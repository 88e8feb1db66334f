#!/usr/bin/env bash
# Builds bombardier (an HTTP load generator written in Go) to
# $REPO/.cache/loadgen/bin/bombardier, for the read benchmark (bench/p9_reads.py): a Python
# client cannot keep 200 connections busy without becoming what is measured. Does nothing when
# the binary was already built from the same version with the same Go.
#
# Environment: GO (default: go from PATH, else /usr/local/go/bin/go),
# LOADGEN_FORCE=1 rebuilds unconditionally.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin_dir="$repo/.cache/loadgen/bin"
bin="$bin_dir/bombardier"
stamp="$bin.sha256"
module="github.com/codesenberg/bombardier@v1.2.6"

# shellcheck source=../find-go.sh
source "$here/../find-go.sh"

want="$( (echo "$module"; "$go_bin" env GOVERSION) | sha256sum | cut -d' ' -f1)"
if [[ "${LOADGEN_FORCE:-}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "bombardier is up to date: $bin"
    exit 0
fi

mkdir -p "$bin_dir"
rm -f "$stamp"
GOBIN="$bin_dir" CGO_ENABLED=0 "$go_bin" install -trimpath -ldflags="-s -w" "$module"
echo "$want" >"$stamp"
echo "built $bin ($(du -h "$bin" | cut -f1))"
