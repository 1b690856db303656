#!/usr/bin/env bash
# Build the Helm CLI pinned in hack/helm/go.mod (Helm 3, as Rancher runs it); cached by hack/go-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
v="v3.22.0"
exec "$here/../go-tools.sh" "$here" "-s -w -X helm.sh/helm/v3/internal/version.version=$v" helm=helm.sh/helm/v3/cmd/helm
