#!/usr/bin/env bash
# build.sh <outdir> -- build the embedded FerretDB test server to <outdir>/imferret.
#
# Does nothing if <outdir>/imferret is newer than main.go, go.mod, go.sum and
# this script. Modules come through the Go module proxy into the default module
# cache (nothing is put into the repo). Pure Go: CGO_ENABLED=0.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 <outdir>" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
outdir=$(cd "$1" && pwd)
bin="$outdir/imferret"

up_to_date=1
if [ -x "$bin" ]; then
    for f in main.go go.mod go.sum build.sh; do
        if [ ! "$bin" -nt "$here/$f" ]; then
            up_to_date=0
        fi
    done
else
    up_to_date=0
fi
if [ "$up_to_date" = 1 ]; then
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    export PATH="$PATH:/usr/local/go/bin"
fi
if ! command -v go >/dev/null 2>&1; then
    echo "$0: go not found (looked on PATH and in /usr/local/go/bin)" >&2
    exit 1
fi

export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# Build to a temporary name and rename, so a concurrent reader never sees a
# half-written binary.
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
    cd "$here"
    # ferretdb_no_postgresql: drop the PostgreSQL backend (SQLite only).
    go build -trimpath -buildvcs=false -tags ferretdb_no_postgresql \
        -ldflags='-s -w' -o "$tmp" .
)
mv -f "$tmp" "$bin"
trap - EXIT
