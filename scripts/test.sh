#!/usr/bin/env bash
# The test command (README, CI): set up what the tests need through the project's scripts, lint, then run
# every tier. Arguments go to pytest (e.g. `-m unit`, `tests/integration`). pytest's exit 5 ("no tests
# collected") is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Free disk decides whether the image builds fit (~7 GB of images, ~7 GB of build cache at the peak, 3 GB of
# wheels, ~6 GB of the venv): say it up front and at the end, so a "no space left" failure explains itself.
disk_free() { echo "test.sh: free disk $1: $(df -h --output=avail . | tail -n 1 | tr -d ' ') here," \
  "$(df -h --output=avail /var/lib/docker 2>/dev/null | tail -n 1 | tr -d ' ') for docker"; }
disk_free "before set-up"
bash scripts/setup.sh --docker
# Containers, networks and build cache a killed run left, and those the tests leave, go (the images stay for reuse).
bash scripts/clean_docker.sh >/dev/null
trap 'bash scripts/clean_docker.sh >/dev/null 2>&1 || true; disk_free "at the end"' EXIT
disk_free "after set-up"
bash scripts/sdk_venvs.sh   # SageMaker SDK v2 and v3 venvs for the local-mode tier (one distribution name)
bash scripts/browser_setup.sh   # chromium + chromium-driver, selenium, .venv-demo (gradio) for tests/browser
.venv/bin/ruff check src tests examples benchmarks
.venv/bin/ruff format --check src tests examples benchmarks

set +e
.venv/bin/pytest --durations=25 "$@"  # the slowest tests in the log: CI time is watched
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5), treated as success"
  rc=0
fi
exit "$rc"
