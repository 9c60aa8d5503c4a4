#!/usr/bin/env bash
# The demo command: set up (idempotent), then send examples/emailplan.yaml end to end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash hack/setup.sh
export EMAILPLAN_CONTROLPLANE_BIN="$(cat .venv/controlplane-bin)"
exec .venv/bin/python hack/demo.py "$@"
