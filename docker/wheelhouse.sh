#!/usr/bin/env bash
# Fill wheelhouse/ (repo root) with every package the images install, for builds whose containers cannot reach
# PyPI (air-gapped CI, this project's test machines). The Dockerfiles bind-mount wheelhouse/ and install with
# `pip install --no-index --find-links` when it holds wheels, and from the index otherwise.
#   docker/wheelhouse.sh [--python-version 3.11] [--dir wheelhouse]
# --python-version is the *image's* Python, not the host's: 3.11 for the Debian bookworm test base, 3.12 for
# the default CUDA base (Ubuntu 24.04). Every pin of docker/constraints.txt (the lock: the full set the images
# resolve to) is downloaded with --no-deps for that Python and manylinux x86_64, so the host's Python does not
# matter. Packages published only as sdists (sagemaker-training, sagemaker-inference, ...) come as sdists and are
# built in the image's builder stage; setuptools and wheel are in the lock so that works offline.
# Idempotent: pip skips files already present. Prints the directory and its size.
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER=3.11
DIR=wheelhouse
PY=${PYTHON:-.venv/bin/python}
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "wheelhouse.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$PY" ] || PY=python3
ABI="cp${PYVER/./}"

mkdir -p "$DIR"
# The host's pip configuration (extra indexes, constraints, certificates) has no say in what the images get.
export PIP_CONFIG_FILE=/dev/null
unset PIP_CONSTRAINT PIP_FIND_LINKS PIP_EXTRA_INDEX_URL
# manylinux tags up to glibc 2.36 (bookworm; Ubuntu 24.04 has 2.39): pip does not expand a --platform to the
# older glibc tags it implies, so list them all; plus pure-Python wheels and sdists.
platforms=(--platform linux_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"$PY" -m pip download -q --no-deps -d "$DIR" \
  --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none "${platforms[@]}" \
  -r docker/constraints.txt
# The builder checks this against its own Python and says what to do on a mismatch.
echo "$PYVER" >"$DIR/PYTHON_VERSION"
echo "wheelhouse.sh: $DIR for Python $PYVER: $(find "$DIR" -maxdepth 1 -type f | wc -l) files, $(du -sh "$DIR" | cut -f1)"
