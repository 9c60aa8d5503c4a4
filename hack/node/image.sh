#!/usr/bin/env bash
# Build the project image from the repository's Dockerfile with buildah (vfs
# storage, no daemon), on the Debian-made Python base (hack/node/base-image.sh),
# and save it with the sandbox ("pause") image as OCI archives that containerd
# imports. Everything is cached in ~/.cache/emailplan/node, keyed by the content
# of what goes into the image, so a warm run returns at once.
#
# Last line of output: KEY=VALUE pairs (IMAGE, IMAGE_ARCHIVE, PAUSE_IMAGE,
# PAUSE_ARCHIVE) for hack/node/cluster.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${EMAILPLAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emailplan}"
DIR="$CACHE_ROOT/node"
B=(buildah --storage-driver vfs)
log() { printf '[node] %s\n' "$*" >&2; }
mkdir -p "$DIR"
exec 7>"$DIR/.image.lock"
flock 7

# The sandbox image every Pod starts with: busybox sleeping forever, under the
# name the kubelet and containerd ask for, since no registry is reachable.
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
PAUSE_ARCHIVE="$DIR/pause-3.10-busybox.tar"
if [ ! -s "$PAUSE_ARCHIVE" ]; then
  log "sandbox image: busybox as $PAUSE_IMAGE"
  c="$("${B[@]}" from scratch)"
  "${B[@]}" copy "$c" /bin/busybox /bin/busybox >/dev/null
  "${B[@]}" config --entrypoint '["/bin/busybox","sleep","infinity"]' --cmd '' "$c"
  "${B[@]}" commit --quiet --rm "$c" localhost/emailplan-pause:busybox >/dev/null
  "${B[@]}" push --quiet localhost/emailplan-pause:busybox "oci-archive:$PAUSE_ARCHIVE.tmp:$PAUSE_IMAGE"
  mv "$PAUSE_ARCHIVE.tmp" "$PAUSE_ARCHIVE"
fi

BASE="$(bash "$ROOT/hack/node/base-image.sh" | tail -1)"
# Key: the base image and every file the Dockerfile copies (the .dockerignore allow-list),
# except README.md, which only becomes the package's long description.
KEY="$(cd "$ROOT" && { echo "$BASE"; cat Dockerfile .dockerignore;
  git ls-files -co --exclude-standard -- pyproject.toml constraints.txt emailplan operator sender \
    | grep -v -e '__pycache__' -e '\.pyc$' | sort | xargs sha1sum; } | sha1sum | cut -c1-12)"
IMAGE="localhost/emailplan:local-$KEY"
ARCHIVE="$DIR/emailplan-$KEY.tar"
if [ ! -s "$ARCHIVE" ]; then
  # pip inside the build uses the machine's package index (pip config or PIP_INDEX_URL).
  # Same for its CA bundle: this machine kind reaches the index through a TLS-inspecting proxy
  # whose CA is only in the machine's bundle, so that bundle is mounted into the build.
  index="${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}"
  cert="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
  args=(--build-arg "PYTHON_IMAGE=$BASE")
  [ -n "$index" ] && args+=(--build-arg "PIP_INDEX_URL=$index")
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    args+=(--volume "$(dirname "$(readlink -f "$cert")"):/run/host-ca:ro" --build-arg "PIP_CERT=/run/host-ca/$(basename "$(readlink -f "$cert")")")
  fi
  log "project image: buildah bud $IMAGE (first run: several minutes; pip downloads the dependencies)"
  start=$SECONDS
  (cd "$ROOT" && "${B[@]}" bud --network host --layers=false --pull-never "${args[@]}" -t "$IMAGE" -f Dockerfile . 2>&1) |
    while IFS= read -r l; do case "$l" in STEP*|"Successfully"*|*rror*|Collecting*|Saved*) log "  $l";; esac; done
  [ "${PIPESTATUS[0]}" = 0 ] || { log "buildah bud failed (rerun: cd $ROOT && buildah --storage-driver vfs bud --network host ${args[*]} .)"; exit 1; }
  "${B[@]}" push --quiet "$IMAGE" "oci-archive:$ARCHIVE.tmp:$IMAGE"
  mv "$ARCHIVE.tmp" "$ARCHIVE"
  size="$("${B[@]}" images --noheading --format '{{.Size}}' "$IMAGE")"
  log "project image built in $((SECONDS - start)) s: $IMAGE, $size unpacked, archive $(du -h "$ARCHIVE" | cut -f1)"
  printf 'image=%s unpacked=%s archive_bytes=%s build_seconds=%s\n' "$IMAGE" "${size// /}" \
    "$(stat -c %s "$ARCHIVE")" "$((SECONDS - start))" > "$ARCHIVE.size"
  # The archive is the cache: drop the image and the builder stage from buildah's vfs storage,
  # which keeps a full copy of every layer.
  "${B[@]}" rmi "$IMAGE" >/dev/null 2>&1 || true
  "${B[@]}" rmi --prune >/dev/null 2>&1 || true
else
  log "project image cached: $IMAGE ($(du -h "$ARCHIVE" | cut -f1))"
fi
echo "IMAGE=$IMAGE IMAGE_ARCHIVE=$ARCHIVE PAUSE_IMAGE=$PAUSE_IMAGE PAUSE_ARCHIVE=$PAUSE_ARCHIVE"
