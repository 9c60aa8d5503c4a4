#!/usr/bin/env bash
# Build the local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager), the node parts (kubelet, kube-scheduler, kube-proxy;
# used by hack/node) and helm from their Go modules.
#
# Binaries are cached outside the repository, keyed by version, so a warm run
# returns at once. Prints the bin directory on its last line.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE_ROOT="${EMAILPLAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emailplan}"
BIN="$CACHE_ROOT/controlplane/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}/bin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$CACHE_ROOT/controlplane/build"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"

log() { printf '[controlplane] %s\n' "$*" >&2; }
mkdir -p "$BIN" "$WORK"
# One build at a time (tests, the demo and people may all ask at once).
exec 9>"$CACHE_ROOT/controlplane/.lock"
flock 9

need() { [ ! -x "$BIN/$1" ]; }

# gobuild OUT PKG [flags...]: `go build -v`, reporting every tenth of the package graph compiled,
# so a cold build of many minutes shows how far it is. Compiler errors pass through.
gobuild() {
  local out="$1" pkg="$2"; shift 2
  local total; total="$(go list -deps "$pkg" | wc -l)"
  go build -v -trimpath "$@" -o "$out" "$pkg" 2>&1 | {
    local n=0 shown=0 line
    while IFS= read -r line; do
      case "$line" in
        *" "*|"#"*|*.go:*) printf '%s\n' "$line" >&2 ;;
        *) n=$((n + 1))
           if [ $((n * 10 / total)) -gt "$shown" ]; then
             shown=$((n * 10 / total)); log "  $(basename "$out" | cut -d. -f1): $((shown * 10))% of $total packages"
           fi ;;
      esac
    done
  }
}

build_etcd() {
  need etcd || { log "etcd $ETCD_VERSION cached"; return; }
  log "building etcd $ETCD_VERSION (1/$KUBE_STEPS)"
  local d="$WORK/etcd"
  rm -rf "$d"; mkdir -p "$d"
  cp "$HERE/etcd/main.go" "$d/"
  (cd "$d" && go mod init emailplan.local/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
    go mod tidy >/dev/null 2>&1 &&
    gobuild "$BIN/etcd.tmp.$$" . && mv "$BIN/etcd.tmp.$$" "$BIN/etcd")
}

# The k8s.io/kubernetes commands built from one module (tools.go). The module
# directory is keyed by this list, so adding a command re-tidies once; the Go
# build cache is shared, so only the new command's own packages compile.
KUBE_CMDS="kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy"
KUBE_STEPS=$(( $(wc -w <<<"$KUBE_CMDS") + 2 ))

prepare_kube() {
  local d="$WORK/kube-$KUBE_VERSION-$(printf '%s' "$KUBE_CMDS" | sha1sum | cut -c1-8)"
  if [ -f "$d/.ready" ]; then echo "$d"; return; fi
  rm -rf "$d"; mkdir -p "$d"
  log "resolving k8s.io/kubernetes $KUBE_VERSION and its staging modules"
  local gomod
  gomod="$(cd "$d" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces them
  # with ./staging paths; point each at the published v0.<minor>.<patch>.
  local staging_version="v0.${KUBE_VERSION#v1.}"
  python3 - "$gomod" "$staging_version" "$KUBE_VERSION" > "$d/go.mod" <<'PY'
import re, sys
gomod, staging, kube = sys.argv[1:4]
text = open(gomod).read()
goline = re.search(r"^go (\S+)", text, re.M).group(1)
mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", text, re.M)))
if not mods:
    sys.exit("no staging replaces found in " + gomod)
print("module emailplan.local/kube\n")
print(f"go {goline}\n")
print(f"require k8s.io/kubernetes {kube}\n")
print("replace (")
for m in mods:
    print(f"\t{m} => {m} {staging}")
print(")")
PY
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in $KUBE_CMDS; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } > "$d/tools.go"
  (cd "$d" && go mod tidy >&2)
  touch "$d/.ready"
  echo "$d"
}

build_kube() {
  local name="$1" step="$2"
  need "$name" || { log "$name $KUBE_VERSION cached"; return; }
  local d; d="$(prepare_kube)"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  local ld="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  log "building $name $KUBE_VERSION ($step/$KUBE_STEPS; a cold build takes several minutes on 2 cores)"
  (cd "$d" && gobuild "$BIN/$name.tmp.$$" "k8s.io/kubernetes/cmd/$name" -ldflags "$ld" && mv "$BIN/$name.tmp.$$" "$BIN/$name")
}

build_helm() {
  need helm || { log "helm $HELM_VERSION cached"; return; }
  log "building helm $HELM_VERSION ($KUBE_STEPS/$KUBE_STEPS)"
  local d="$WORK/helm"
  rm -rf "$d"; mkdir -p "$d"
  (cd "$d" && go mod init emailplan.local/helm >/dev/null 2>&1 &&
    printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > tools.go &&
    go get "helm.sh/helm/v3@$HELM_VERSION" >&2 && go mod tidy >&2 &&
    gobuild "$BIN/helm.tmp.$$" helm.sh/helm/v3/cmd/helm -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" && mv "$BIN/helm.tmp.$$" "$BIN/helm")
}

build_etcd
n=2
for c in $KUBE_CMDS; do build_kube "$c" "$n"; n=$((n + 1)); done
build_helm
log "ready: $BIN"
echo "$BIN"
