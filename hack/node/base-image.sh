#!/usr/bin/env bash
# Build the Python base image for the local image build from Debian packages
# (mmdebstrap: a bookworm rootfs with Python 3.11), so no outside image registry
# is needed. The rootfs tar is cached in ~/.cache/emailplan/node keyed by the
# package list; the image is committed into buildah's vfs storage as
# localhost/emailplan-base:bookworm. Prints the image name on its last line.
set -euo pipefail
CACHE_ROOT="${EMAILPLAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emailplan}"
DIR="$CACHE_ROOT/node"
# python3-venv: the Dockerfile makes a virtualenv; python-is-python3: it calls `python`;
# passwd: groupadd/useradd for the non-root user; pip for `pip wheel` in the builder stage.
PACKAGES="python3,python3-venv,python3-pip,python-is-python3,passwd,ca-certificates"
KEY="$(printf '%s' "bookworm $PACKAGES v1" | sha1sum | cut -c1-10)"
TAR="$DIR/base-bookworm-$KEY.tar"
IMAGE="localhost/emailplan-base:bookworm-$KEY"
log() { printf '[node] %s\n' "$*" >&2; }
mkdir -p "$DIR"
exec 8>"$DIR/.base.lock"
flock 8
if [ ! -s "$TAR" ]; then
  log "base image: mmdebstrap bookworm with $PACKAGES (first run: 2-5 minutes)"
  # Documentation and locales are dropped: the image never needs them.
  mmdebstrap --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='APT::Install-Recommends "false"' --format=tar \
    bookworm "$TAR.tmp" 2>&1 | while IFS= read -r l; do case "$l" in I:*|E:*|W:*) log "  $l";; esac; done
  [ "${PIPESTATUS[0]}" = 0 ] || { log "mmdebstrap failed"; exit 1; }
  mv "$TAR.tmp" "$TAR"
  log "base rootfs: $(du -h "$TAR" | cut -f1)"
else
  log "base rootfs cached ($TAR)"
fi
if ! buildah --storage-driver vfs inspect --type image "$IMAGE" >/dev/null 2>&1; then
  log "base image: importing the rootfs as $IMAGE"
  c="$(buildah --storage-driver vfs from scratch)"
  buildah --storage-driver vfs add "$c" "$TAR" / >/dev/null
  buildah --storage-driver vfs config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$c"
  buildah --storage-driver vfs commit --quiet --rm "$c" "$IMAGE" >/dev/null
fi
log "base image ready: $IMAGE"
echo "$IMAGE"
