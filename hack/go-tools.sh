#!/usr/bin/env bash
# Build Go commands pinned by one of our wrapper modules into $ENCLAVE_BIN (default .cache/bin).
#   hack/go-tools.sh <module-dir> <ldflags> <name>=<package> [...]
# Cached: a stamp keyed on go.mod, go.sum, the module's own *.go files (if any), the Go version and the ldflags;
# a warm run only checks it.
set -euo pipefail
moddir="$(cd "$1" && pwd)"; ldflags="$2"; shift 2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${ENCLAVE_BIN:-$root/.cache/bin}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "go-tools: Go is required (Go 1.26)" >&2; exit 1; }
label="$(basename "$moddir")"
key="$( (cat "$moddir/go.mod" "$moddir/go.sum"; cat "$moddir"/*.go 2>/dev/null || true; go version; echo "$ldflags"; echo "$@") | sha256sum | cut -c1-16)"
stamp="$bin/.stamp-$label-$key"
if [ -f "$stamp" ]; then
  ok=1; for spec in "$@"; do [ -x "$bin/${spec%%=*}" ] || ok=0; done
  if [ "$ok" = 1 ]; then echo "$label: binaries up to date in $bin"; exit 0; fi
fi
mkdir -p "$bin"
cd "$moddir"
for spec in "$@"; do
  name="${spec%%=*}"; pkg="${spec#*=}"
  echo "$label: building $name ($pkg)"
  start=$(date +%s)
  go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg"
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$label: built $name in $(( $(date +%s) - start ))s"
done
rm -f "$bin/.stamp-$label-"*
touch "$stamp"
