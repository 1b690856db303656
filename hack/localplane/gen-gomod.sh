#!/usr/bin/env bash
# Regenerate the replace block of hack/localplane/go.mod from kubernetes' own go.mod: every staging
# module `k8s.io/X => ./staging/...` becomes `k8s.io/X => k8s.io/X v0.<minor>.<patch>`.
#   hack/localplane/gen-gomod.sh v1.37.2
set -euo pipefail
v="${1:-v1.37.2}"; staging="v0.${v#v1.}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
modfile="$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
cd "$here"
go mod edit -require="k8s.io/kubernetes@$v"
grep -E '=> \./staging' "$modfile" | awk '{print $1}' | while read -r m; do
  go mod edit -replace="$m=$m@$staging"
done
go mod tidy
