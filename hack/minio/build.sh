#!/usr/bin/env bash
# Build the MinIO server pinned in hack/minio/go.mod; cached by hack/go-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../go-tools.sh" "$here" "-s -w" minio=github.com/minio/minio
