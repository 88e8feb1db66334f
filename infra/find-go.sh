# Sourced by the Go builds under infra/: sets go_bin to the Go toolchain to use —
# $GO when set, else `go` from PATH, else /usr/local/go/bin/go — or exits naming the problem.
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
