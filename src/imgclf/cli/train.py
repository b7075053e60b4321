"""`imgclf train`: the trainer on local paths (the container runs the same `fit` on the /opt/ml contract)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from imgclf import hyperparameters
from imgclf.channels import resolve_channels
from imgclf.sample_data import write_fallback_sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        help="Dataset root with train/ (and optional valid/, test/) channel subfolders, or a single channel used "
        "as train. A channel is an ImageFolder, an HDF5 file + labels CSV, or a CSV/JSON Lines manifest "
        "(see --data-format). Default: the embedded digits sample.",
    )
    parser.add_argument("--train", type=Path, help="Train channel (overrides DATA/train).")
    parser.add_argument("--valid", type=Path, help="Valid channel (default DATA/valid, else split from train).")
    parser.add_argument("--test", type=Path, help="Test channel (default DATA/test, if present).")
    parser.add_argument("--model-dir", type=Path, default=Path("model"), help="Where the artifact goes.")
    parser.add_argument("--checkpoint-dir", type=Path, help="Per-epoch checkpoints; a rerun resumes from them.")
    parser.add_argument("--debugger-out", type=Path, help="Turn on the smdebug hook, writing tensors here.")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="Record system utilisation and a torch.profiler trace to DIR.",
    )
    hyperparameters.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from imgclf.training import RunConfig, fit

    hp = hyperparameters.from_arguments(args)
    paths = resolve_channels(args.data, train=args.train, valid=args.valid, test=args.test)
    if paths is None:
        paths = write_fallback_sample("No --data given")
    cfg = RunConfig(
        train_dir=paths.train,
        valid_dir=paths.valid,
        test_dir=paths.test,
        model_dir=args.model_dir,
        checkpoint_dir=args.checkpoint_dir,
        debugger_out=args.debugger_out,
    )
    profiler = contextlib.nullcontext()
    if args.profile is not None:
        from imgclf.training.profiler import Profiler

        profiler = Profiler(args.profile)
    with profiler as p:
        result = fit(hp, cfg, profiler=p)
    summary = f"valid_accuracy {result['valid_accuracy']:.4f} (epoch {result['best_epoch']})"
    if "test_accuracy" in result:
        summary += f", test_accuracy {result['test_accuracy']:.4f}"
    print(f"Model written to {args.model_dir}: {summary}", flush=True)
    return 0
