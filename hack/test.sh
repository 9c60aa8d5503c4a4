#!/usr/bin/env bash
# The test command: set up (idempotent), then run the whole suite, including
# ruff, mypy and import-linter (tests/test_quality.py). Extra args go to pytest.
# The suite runs on EMAILPLAN_TEST_WORKERS pytest-xdist workers (default 2): most of its time
# is spent waiting on servers, so two workers on two cores take about half the time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash hack/setup.sh
export EMAILPLAN_CONTROLPLANE_BIN="$(cat .venv/controlplane-bin)"
printf '\n==> tests\n' >&2
exec .venv/bin/python -m pytest -n "${EMAILPLAN_TEST_WORKERS:-2}" --dist loadgroup "$@"
