#!/usr/bin/env bash
# Set up node mode (real Pods; see README "Node mode"): the Debian packages for
# containerd, runc, CNI plugins, buildah, mmdebstrap and iptables; the kubelet,
# kube-scheduler and kube-proxy (hack/controlplane/build.sh, same Go build cache
# as the API server); the Debian-made Python base image, the sandbox image and the
# project image (hack/node/image.sh). Everything is cached in ~/.cache/emailplan;
# a warm run takes seconds. The demo and the fast tests do not need any of it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
step() { printf '\n==> node mode: %s\n' "$*" >&2; }

step "system packages (containerd, runc, CNI plugins, buildah, mmdebstrap, iptables)"
declare -A pkg=([containerd]=containerd [runc]=runc [buildah]=buildah [mmdebstrap]=mmdebstrap
  [iptables]=iptables [conntrack]=conntrack [busybox]=busybox-static [ip]=iproute2)
missing=()
for cmd in "${!pkg[@]}"; do command -v "$cmd" >/dev/null || missing+=("${pkg[$cmd]}"); done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "node mode needs root and these packages: ${missing[*]}" >&2; exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
echo "ok: containerd $(containerd --version | awk '{print $3}'), runc, buildah $(buildah --version | awk '{print $3}')" >&2

# The images (pip downloads, vfs copies) and the Go build (CPU) overlap: the image build
# runs in the background while the kubelet and friends compile.
step "images in the background: Debian-made Python base, sandbox, project image (buildah, cached)"
images_log="$(mktemp)"
bash hack/node/image.sh > "$images_log" 2> >(sed -u 's/^/  /' >&2) &
images_pid=$!

step "kubelet, kube-scheduler, kube-proxy (built with the control plane, cached)"
BIN="$(bash hack/controlplane/build.sh | tail -1)"
for b in kubelet kube-scheduler kube-proxy; do [ -x "$BIN/$b" ] || { echo "missing $BIN/$b" >&2; exit 1; }; done
echo "ok: $BIN" >&2

step "waiting for the images"
if ! wait "$images_pid"; then
  echo "image build failed (see the [node] lines above)" >&2; exit 1
fi
tail -1 "$images_log" | tr ' ' '\n' >&2
rm -f "$images_log"
