#!/usr/bin/env bash
# Set up everything the tests and the demo need on a fresh machine of this kind:
# Debian packages (PostgreSQL 15, kubectl check), the Python virtualenv with the
# project and its dev tools, and the local Kubernetes control plane built from Go
# modules (cached in ~/.cache/emailplan; a warm run takes seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
# The machine's Go toolchain lives in /usr/local/go (Debian's golang-go is too old for Kubernetes 1.34).
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
missing=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || command -v postgres >/dev/null || missing+=(postgresql-15)
command -v setpriv >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing system packages: ${missing[*]} (install them, e.g. with apt-get)" >&2; exit 1
  fi
fi
command -v kubectl >/dev/null || { echo "kubectl not found on PATH" >&2; exit 1; }
command -v go >/dev/null || { echo "Go >= 1.24 not found (expected in /usr/local/go/bin)" >&2; exit 1; }
echo "ok: postgres, go ($(go version | awk '{print $3}')), kubectl" >&2

step "python virtualenv (.venv)"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -U pip setuptools wheel
  .venv/bin/pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
  rm -f .venv/.installed-*; touch "$stamp"
else
  echo "ok: dependencies unchanged since last install" >&2
fi

bash hack/node/setup.sh  # node mode (real Pods): packages, kubelet, images; see README
step "local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, helm)"
BIN="$(bash hack/controlplane/build.sh | tail -1)"
echo "$BIN" > .venv/controlplane-bin
echo "ok: $BIN" >&2
