#!/usr/bin/env bash
# The test command (README, CI): set up what the tests need through the project's scripts, lint, then run
# every tier. Arguments go to pytest (e.g. `-m unit`, `tests/integration`). pytest's exit 5 ("no tests
# collected") is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --docker
# Containers, networks and build cache the tests leave behind go, pass or fail (the images stay for reuse).
trap 'bash scripts/clean_docker.sh >/dev/null 2>&1 || true' EXIT
bash scripts/sdk_venvs.sh   # SageMaker SDK v2 and v3 venvs for the local-mode tier (one distribution name)
.venv/bin/ruff check src tests examples benchmarks
.venv/bin/ruff format --check src tests examples benchmarks

set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5), treated as success"
  rc=0
fi
exit "$rc"
