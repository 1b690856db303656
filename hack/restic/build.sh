#!/usr/bin/env bash
# Build the restic backup client pinned in hack/restic/go.mod (FederatedNode backup Jobs); cached by hack/go-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../go-tools.sh" "$here" "-s -w" restic=github.com/restic/restic/cmd/restic
