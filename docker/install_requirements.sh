#!/bin/sh
# pip install inside the builder stage: offline from /wheelhouse (docker/wheelhouse.sh, bind-mounted by the
# Dockerfiles) when it holds packages, from the package index otherwise. Arguments go to `pip install`
# (or to `pip wheel` when the first argument is `wheel`).
set -eu
command=install
if [ "${1:-}" = wheel ]; then command=wheel; shift; fi
WHEELHOUSE=${WHEELHOUSE:-/wheelhouse}
if ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1; then
  want=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  have=$(cat "$WHEELHOUSE/PYTHON_VERSION" 2>/dev/null || echo "$want")
  if [ "$have" != "$want" ]; then
    echo "wheelhouse/ holds packages for Python $have but this base image runs Python $want:" \
      "run docker/wheelhouse.sh --python-version $want (or empty wheelhouse/ to install from the index)" >&2
    exit 1
  fi
  set -- --no-index --find-links "$WHEELHOUSE" "$@"
fi
exec python -m pip "$command" --no-cache-dir --disable-pip-version-check "$@"
