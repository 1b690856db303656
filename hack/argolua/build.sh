#!/usr/bin/env bash
# Build the command in hack/argolua (pinned by its go.mod); cached by hack/go-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../go-tools.sh" "$here" "-s -w" argocd-lua-health=.
