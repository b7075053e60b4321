"""`imgclf tune`: local hyperparameter search (Optuna) over the same space as the SageMaker tuner.

imgclf.tuning runs the search; this parses the flags, reports progress and retrains the best configuration with
--retrain-best. Outputs in --out: hyperparameters.json, trials.csv, summary.md, tune.png, study.db, model/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from imgclf import hyperparameters as hpmod
from imgclf import system
from imgclf.channels import resolve_channels
from imgclf.errors import UserError
from imgclf.metrics import OBJECTIVES
from imgclf.tuning import LocalTuner, retrain, search_space, tunable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="Dataset root with train/ (valid/, test/ optional) channel subfolders, or a single channel used as "
        "train (valid is then split from it); as `imgclf train --data`.",
    )
    parser.add_argument("--trials", type=int, default=20, help="Total trials in the study (resumed ones count).")
    parser.add_argument("--jobs", type=int, default=1, help="Parallel trials (threads), at most the CPU count.")
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="valid_accuracy")
    parser.add_argument("--out", type=Path, default=Path("tune"), help="Output directory.")
    parser.add_argument("--study-db", type=Path, help="SQLite file of the study (default OUT/study.db); resumes.")
    parser.add_argument("--retrain-best", action="store_true", help="Train the final model with the best values.")
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (--seed is the training seed).")
    parser.add_argument("--no-pruning", action="store_true", help="Run every trial to its last epoch.")
    parser.add_argument(
        "--tune",
        help="Comma-separated subset of the tunable hyperparameters to search "
        f"(default all: {', '.join(p.name for p in tunable())}); the rest keep their fixed values.",
    )
    hpmod.add_arguments(parser)  # fixed (non-tuned) values: --image-size 32 --pretrained-weights none ...


def run(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise UserError("imgclf tune needs optuna: pip install optuna matplotlib") from exc
    channels = resolve_channels(args.data)
    if args.trials < 1:
        raise UserError("--trials must be >= 1.")
    fixed = hpmod.given_arguments(args)
    params = search_space(args.tune, fixed)
    hpmod.Hyperparameters.from_mapping(fixed)  # fail before the search on a bad fixed value

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    db = args.study_db or out / "study.db"
    cpus = system.cpu_count()
    jobs = max(1, min(args.jobs, cpus))
    if jobs < args.jobs:
        print(f"--jobs {args.jobs} capped at {jobs}: this host has {cpus} CPU(s)", flush=True)

    tuner = LocalTuner(
        channels=channels,
        out=out,
        params=params,
        fixed=fixed,
        objective=args.objective,
        storage=f"sqlite:///{db.resolve()}",
        jobs=jobs,
        sampler_seed=args.sampler_seed,
        pruning=not args.no_pruning,
    )
    t0 = time.perf_counter()
    study = tuner.optimize(args.trials)
    summary = tuner.summarise(study, time.perf_counter() - t0)
    print(summary["text"], flush=True)
    if args.retrain_best:
        print(f"Retraining the best configuration into {out / 'model'}", flush=True)
        result = retrain(channels, out / "model", summary["best_values"], tuner.feature_cache)
        line = f"Final model {out / 'model'}: valid_accuracy {result['valid_accuracy']:.4f}"
        if "test_accuracy" in result:
            line += f", test_accuracy {result['test_accuracy']:.4f}"
        print(line, flush=True)
    return 0
