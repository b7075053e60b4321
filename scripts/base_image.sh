#!/usr/bin/env bash
# Build the offline test base image: Debian bookworm minbase from debootstrap, imported into Docker.
# For machines that cannot pull the CUDA base (tests, air-gapped CI); users keep the default CUDA base.
#   scripts/base_image.sh [TAG]      default TAG: imgclf-base:bookworm (or $IMGCLF_TEST_BASE)
# Cached by tag: nothing is rebuilt when the tag exists (`--force` rebuilds). Prints the tag on stdout.
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER (default /usr/bin/docker).
set -euo pipefail

FORCE=0
TAG=""
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    -*) echo "base_image.sh: unknown option $arg" >&2; exit 2 ;;
    *) TAG=$arg ;;
  esac
done
TAG=${TAG:-${IMGCLF_TEST_BASE:-imgclf-base:bookworm}}
DOCKER=${DOCKER:-/usr/bin/docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$FORCE" = 0 ] && $DOCKER image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base_image.sh: debootstrap missing (run scripts/docker_setup.sh)" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/imgclf-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
echo "base_image.sh: debootstrap bookworm from $MIRROR" >&2
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >/tmp/imgclf-debootstrap.log 2>&1 || {
  tail -n 20 /tmp/imgclf-debootstrap.log >&2; exit 1; }
# Same hygiene as the images: no apt lists or caches, no host resolver or hostname baked in.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/var/log/* "$ROOT"/etc/hostname
: >"$ROOT"/etc/resolv.conf
tar -C "$ROOT" -c . | $DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null
echo "base_image.sh: built $TAG ($($DOCKER image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))" >&2
echo "$TAG"
