#!/usr/bin/env bash
# One command: every benchmark, then benchmarks/RESULTS.md from the JSON they write (benchmarks/results/).
#   bash benchmarks/run.sh            # training, tuning and serving: ~8 min on 2 quiet cores (+~2.5 min the
#                                     # first time to generate the stand-in backbone weights)
#   bash benchmarks/run.sh train      # only one of them: train | tune | serve | explain | engines | results
#   (engines, issue 13's targets: in-process floors, each engine under `imgclf serve`, the seed-style server,
#   ~8 min incl. the export; not part of `all`)
# Loopback only; servers run one at a time and are stopped (process group) when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -n "${PYTHON:-}" ] || [ -x .venv/bin/python ] || bash scripts/setup.sh   # a fresh clone: the venv first
what=${1:-all}
mkdir -p benchmarks/results
if [[ $what == all || $what == train ]]; then
  "$PY" benchmarks/train_bench.py --rounds 2 --out benchmarks/results/train.json
fi
if [[ $what == all || $what == tune ]]; then
  "$PY" benchmarks/tune_bench.py --trials 4 --out benchmarks/results/tune.json
fi
if [[ $what == all || $what == serve ]]; then
  "$PY" benchmarks/serve_bench.py --out benchmarks/results/serve.json
fi
if [[ $what == all || $what == explain ]]; then
  "$PY" benchmarks/explain_bench.py --repeats 8 --out benchmarks/results/explain.json
fi
if [[ $what == engines ]]; then
  "$PY" benchmarks/engine_serve_bench.py --targets --rounds 1 --seconds 6 --requests 30 --floor-requests 30 \
    --out benchmarks/results/engine_targets.json
  "$PY" benchmarks/draft_bench.py --out benchmarks/results/draft.json
fi
"$PY" benchmarks/make_results.py
