#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for imgclf: system packages, the host venv (.venv) with the locked
# dependencies, and the package itself in editable mode. Idempotent: re-running only fills what is missing.
#   scripts/setup.sh            host venv + Java (MMS) — enough for unit and integration tests
#   scripts/setup.sh --docker   also Docker (daemon started if none answers), debootstrap, registry, compose
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_DOCKER=0
for arg in "$@"; do
  case "$arg" in
    --docker) WITH_DOCKER=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Java runs multi-model-server; python3-venv makes the venv.
apt_install python3-venv openjdk-17-jre-headless

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The lock pins the runtime; test tools come from requirements-dev.txt; imgclf itself (editable) with every
# extra but the SDK, so pyproject's declarations are what the host venv installs, at the lock's versions.
.venv/bin/pip install -q -c docker/constraints.txt -r docker/requirements.txt \
  -r requirements-dev.txt
.venv/bin/pip install -q -c docker/constraints.txt -e '.[all]'
# multi-model-server's model-archiver and TorchServe's torch-model-archiver both install the module
# `model_archiver`; pip's install order decides which wins. imgclf's server needs neither at run time, the
# TorchServe test needs torch's: install it last so every fresh venv ends the same way.
.venv/bin/pip install -q --no-deps --force-reinstall -c docker/constraints.txt torch-model-archiver
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

# After the venv: docker_setup.sh also installs hadolint, awscli and moto into it.
if [ "$WITH_DOCKER" = 1 ]; then
  bash scripts/docker_setup.sh
fi
