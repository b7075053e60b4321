#!/usr/bin/env bash
# The SageMaker Python SDK venvs for the local-mode tests and examples. SDK v2 (`sagemaker<3`, the seeds'
# Estimator/Model API) and SDK v3 (ModelTrainer, `sagemaker.core`) are one distribution name, so each lives in
# its own venv beside the host .venv:
#   .venv-sdk2   sagemaker==2.257.7      .venv-sdk3   sagemaker==3.27.0
# both with protobuf==3.20.3 and numpy<2 (what the toolkits in the images pin; pip check clean) and imgclf
# installed editable without its heavy deps (the launcher needs none of torch/torchvision).
# Idempotent: a venv whose stamp matches is left alone (a second run takes about a second).
#   scripts/sdk_venvs.sh            both venvs
#   scripts/sdk_venvs.sh sdk2       only .venv-sdk2 (or sdk3)
set -euo pipefail
cd "$(dirname "$0")/.."

SDK2_SPEC="sagemaker==2.257.7"
SDK3_SPEC="sagemaker==3.27.0"
# Shared pins: protobuf 3.20.3 is what sagemaker-training 4.9 / smdebug need; both SDKs accept it. Pillow (the
# lock's version) lets examples/ and the drivers make JPEGs.
PINS=("protobuf==3.20.3" "numpy<2" "PyYAML>=6" "pillow==13.0.0")
PY=${PYTHON:-python3}

make_venv() {
  local dir=$1 spec=$2
  local want="$spec ${PINS[*]} imgclf-editable"
  local stamp="$dir/.imgclf-sdk-stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && "$dir/bin/python" -c "import sagemaker, imgclf.sagemaker.sdk_v2, imgclf.cli.sagemaker" >/dev/null 2>&1; then
    echo "sdk_venvs: $dir ready ($spec)"
    return 0
  fi
  echo "sdk_venvs: creating $dir ($spec)"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  # Not against docker/constraints.txt: sagemaker 2.257 needs packaging<25, the lock has 26.
  "$dir/bin/pip" install -q "$spec" "${PINS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  "$dir/bin/python" -c "import sagemaker" || { echo "sdk_venvs: installing $spec into $dir failed" >&2; return 1; }
  "$dir/bin/pip" install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
  # imgclf's own torch/torchvision are left out on purpose; anything else broken is an error.
  local broken
  broken=$("$dir/bin/pip" check 2>&1 | grep -v "^imgclf " | grep -v "^No broken" || true)
  if [ -n "$broken" ]; then
    echo "sdk_venvs: pip check failed in $dir: $broken" >&2
    return 1
  fi
  "$dir/bin/python" -c "import imgclf.sagemaker.sdk_v2, imgclf.sagemaker.sdk_v3, imgclf.cli.sagemaker" || return 1
  echo "$want" > "$stamp"
  echo "sdk_venvs: $dir ready ($("$dir/bin/python" -c 'import importlib.metadata as m; print("sagemaker", m.version("sagemaker"))' 2>/dev/null))"
}

which=${1:-all}
case "$which" in
  all) make_venv .venv-sdk2 "$SDK2_SPEC"; make_venv .venv-sdk3 "$SDK3_SPEC" ;;
  sdk2) make_venv .venv-sdk2 "$SDK2_SPEC" ;;
  sdk3) make_venv .venv-sdk3 "$SDK3_SPEC" ;;
  -h|--help) sed -n '2,10p' "$0" ;;
  *) echo "sdk_venvs.sh: unknown argument $which (all, sdk2, sdk3)" >&2; exit 2 ;;
esac
