#!/usr/bin/env bash
# Remove what building and testing the images leaves behind: test containers (label imgclf.test=1), dangling
# imgclf images, stand-in push-test images, and the build cache. Tagged images (imgclf-train:latest, ...) and the
# test base stay unless --all is given. Safe to run any time; touches nothing that is not imgclf's.
#   scripts/clean_docker.sh          containers, dangling imgclf images, build cache
#   scripts/clean_docker.sh --all    also imgclf-train/imgclf-serve images (every tag) and imgclf-base:bookworm
set -euo pipefail
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker )}
ALL=0
case "${1:-}" in
  --all) ALL=1 ;;
  "") ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) echo "clean_docker.sh: unknown option $1" >&2; exit 2 ;;
esac

ids=$($DOCKER ps -aq --filter label=imgclf.test=1)
[ -z "$ids" ] || $DOCKER rm -f $ids >/dev/null
for role in train serve; do
  $DOCKER image prune -f --filter "label=org.opencontainers.image.title=imgclf-$role" >/dev/null
  pattern="imgclf-$role:pushtest-*"
  [ "$ALL" = 1 ] && pattern="imgclf-$role"
  refs=$($DOCKER images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$pattern")
  [ -z "$refs" ] || $DOCKER rmi $refs >/dev/null
done
[ "$ALL" = 1 ] && { $DOCKER rmi imgclf-base:bookworm >/dev/null 2>&1 || true; }
$DOCKER builder prune -af >/dev/null
$DOCKER system df
