#!/usr/bin/env bash
# What `imgclf demo` and the browser tier (tests/browser) need, on a fresh Debian machine after scripts/setup.sh:
#   - Debian's chromium + chromium-driver (a browser from the package manager: nothing downloads one at run time)
#   - selenium in the host .venv (the test driver; pip check clean against docker/constraints.txt)
#   - .venv-demo: the `demo` extra (gradio). Its own venv because gradio 6 needs pillow<13 while the lock pins
#     pillow 13.0.0 for the images; the host .venv's site-packages (torch, torchvision, captum, imgclf) are
#     appended to its path by a .pth file, so nothing of the multi-GB torch stack is installed twice.
# Idempotent: a venv whose stamp matches is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_PINS=("gradio==6.31.0" "numpy==1.26.4" "pandas==2.2.3")
SELENIUM_PIN="selenium==4.51.0"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in chromium chromium-driver; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser_setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

.venv/bin/pip install -q -c docker/constraints.txt "$SELENIUM_PIN" captum==0.9.0 2>&1 | grep -v "^WARNING: Location" || true

want="${DEMO_PINS[*]}"
stamp=.venv-demo/.imgclf-demo-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv-demo/bin/python -c "import gradio, torch" 2>/dev/null; then
  echo "browser_setup: .venv-demo ready (${DEMO_PINS[0]})"
  exit 0
fi
PY=${PYTHON:-python3}
[ -x .venv-demo/bin/python ] || "$PY" -m venv .venv-demo
.venv-demo/bin/pip install -q "${DEMO_PINS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
host_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
demo_site=$(.venv-demo/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# Added after .venv-demo's own packages (addsitedir also runs the host's .pth files: its editable imgclf):
# gradio and its pillow win, torch & co come from the host venv.
echo "import site; site.addsitedir('$host_site')" > "$demo_site/zz_imgclf_host_venv.pth"
.venv-demo/bin/python -c "import gradio, torch, torchvision, captum, imgclf" \
  || { echo "browser_setup: .venv-demo cannot import the demo's packages" >&2; exit 1; }
echo "$want" > "$stamp"
echo "browser_setup: .venv-demo ready (${DEMO_PINS[0]})"
