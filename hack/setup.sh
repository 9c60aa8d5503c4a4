#!/usr/bin/env bash
# Set up everything the tests and the demo need on a fresh machine of this kind:
# Debian packages (PostgreSQL 15, kubectl check), the Python virtualenv with the
# project (and, unless --runtime-only, its dev tools), and the local Kubernetes control
# plane built from Go modules (cached in ~/.cache/emailplan; a warm run takes seconds).
#
# Quiet: one line per step on the terminal; everything the tools print goes to the log
# file (.devenv/setup.log, or $EMAILPLAN_SETUP_LOG), which is named when a step fails.
#
#   hack/setup.sh                 # tests, lint and benchmarks: the project plus dev tools
#   hack/setup.sh --runtime-only  # the demo: the project and moto (its AWS stand-in) only
#   hack/setup.sh --verbose       # show every tool's output as it comes
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EXTRA=dev VERBOSE=0
for arg in "$@"; do
  case "$arg" in
    --runtime-only) EXTRA=demo ;;
    --verbose) VERBOSE=1 ;;
    *) echo "usage: hack/setup.sh [--runtime-only] [--verbose]" >&2; exit 2 ;;
  esac
done
LOG="${EMAILPLAN_SETUP_LOG:-$ROOT/.devenv/setup.log}"
mkdir -p "$(dirname "$LOG")"
: > "$LOG"

# step TITLE COMMAND...: run COMMAND with its output in the log; one line on the terminal.
# Lines the command prints starting with "[" (progress of the long control-plane build) and
# "ok:" lines are shown too, so a step of many minutes says how far it is.
step() {
  local title="$1"; shift
  printf '==> %s\n' "$title" >&2
  printf '\n==> %s\n' "$title" >> "$LOG"
  local rc=0
  set +e
  # A subshell outside any condition, so `set -e` stops the step at its first failing command.
  if [ "$VERBOSE" = 1 ]; then
    (set -e; "$@") 2>&1 | tee -a "$LOG" >&2
  else
    (set -e; "$@") 2>&1 | tee -a "$LOG" | { grep --line-buffered -E '^(\[|ok:)' >&2 || true; }
  fi
  rc="${PIPESTATUS[0]}"
  set -e
  [ "$rc" = 0 ] && return 0
  printf 'setup failed at "%s"; the last lines of %s:\n' "$title" "$LOG" >&2
  tail -n 15 "$LOG" | sed 's/^/    /' >&2
  printf 'full output: %s\n' "$LOG" >&2
  exit 1
}

system_packages() {
  # The machine's Go toolchain lives in /usr/local/go (Debian's golang-go is too old for Kubernetes 1.34).
  local missing=()
  [ -x /usr/lib/postgresql/15/bin/postgres ] || command -v postgres >/dev/null || missing+=(postgresql-15)
  command -v setpriv >/dev/null || missing+=(util-linux)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      echo "missing system packages: ${missing[*]} (install them, e.g. with apt-get)"; return 1
    fi
  fi
  command -v kubectl >/dev/null || { echo "kubectl not found on PATH"; return 1; }
  command -v go >/dev/null || { echo "Go >= 1.24 not found (expected in /usr/local/go/bin)"; return 1; }
  echo "ok: postgres, go ($(go version | awk '{print $3}')), kubectl"
}

python_env() {
  local py="${PYTHON:-python3}"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  # The dev install includes everything the runtime one has: either stamp satisfies the demo.
  local hash; hash="$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
  if [ -f ".venv/.installed-$hash-dev" ] || [ -f ".venv/.installed-$hash-$EXTRA" ]; then
    echo "ok: dependencies unchanged since last install"; return 0
  fi
  .venv/bin/pip install -q --disable-pip-version-check -U pip setuptools wheel
  .venv/bin/pip install --disable-pip-version-check --progress-bar off -c constraints.txt -e ".[$EXTRA]"
  rm -f .venv/.installed-*; touch ".venv/.installed-$hash-$EXTRA"
  echo "ok: .venv with .[$EXTRA]"
}

control_plane() {
  local bin; bin="$(bash hack/controlplane/build.sh | tail -1)"
  echo "$bin" > .venv/controlplane-bin
  echo "ok: $bin"
}

[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
step "system packages" system_packages
step "python virtualenv (.venv, .[$EXTRA])" python_env
# Node mode (real Pods: containerd, kubelet, images) is for the tests; the demo does not need it.
if [ "$EXTRA" = dev ]; then
  step "node mode: containerd, kubelet, scheduler, kube-proxy, images (cached)" bash hack/node/setup.sh
fi
step "local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, helm)" control_plane
