#!/usr/bin/env bash
# The demo command: set up what the demo runs (idempotent, quiet; the log is named if a step
# fails), then send examples/emailplan.yaml end to end. Arguments go to hack/demo.py
# (--keep, --keep-logs, --non-interactive, --timeout, --json; see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash hack/setup.sh --runtime-only
export EMAILPLAN_CONTROLPLANE_BIN="$(cat .venv/controlplane-bin)"
exec .venv/bin/python hack/demo.py "$@"
