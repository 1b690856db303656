#!/usr/bin/env bash
# Build kwok (fake nodes and pod lifecycles for the local plane) pinned in hack/kwok/go.mod; cached by hack/go-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../go-tools.sh" "$here" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=0.8.0" kwok=sigs.k8s.io/kwok/cmd/kwok
