"""Tuning, side by side in one run: N seed-style training runs of a learning-rate search vs `imgclf tune`, N trials.

The seeds tuned with SageMaker's HyperparameterTuner: every trial a separate training job running their
train_model.py loop (the backbone re-run every epoch). Here that is N sequential runs of train_bench's
`seed_style` loop, each with a learning rate drawn log-uniformly from the spec's range (0.001-0.1) with a fixed
seed. imgclf's side is the `imgclf tune` command with the same N, the same range (`--tune lr`), data, epochs,
batch size and backbone weights, and its defaults otherwise (TPE sampler, median pruning, trials sharing the
cached backbone features). Both sides see the same data subset and weights as train_bench.py.

    python benchmarks/tune_bench.py --trials 4 --out benchmarks/results/tune.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import train_bench as tb

from imgclf.hyperparameters import BY_NAME


def seed_style_search(args, data: Path, weights: Path) -> dict:
    space = BY_NAME["lr"].tuning
    rng = random.Random(args.seed)
    runs = []
    start = time.perf_counter()
    for trial in range(args.trials):
        lr = math.exp(rng.uniform(math.log(space.low), math.log(space.high)))
        t0 = time.perf_counter()
        run_args = argparse.Namespace(**{**vars(args), "lr": lr})
        out = tb.seed_style(run_args, data, weights, lambda epoch, line: None)
        accuracy = out["history"][-1]["valid_accuracy"]
        runs.append({"lr": lr, "valid_accuracy": accuracy, "seconds": time.perf_counter() - t0})
        tb.progress(f"seed_style trial {trial + 1}/{args.trials}: lr {lr:.4g}, valid_accuracy {accuracy:.4f}")
    return {"trials": runs, "wall_seconds": time.perf_counter() - start}


def imgclf_tune(args, data: Path, weights: Path, out: Path) -> dict:
    cmd = [
        str(Path(sys.executable).parent / "imgclf"), "tune", "--data", str(data), "--out", str(out),
        "--trials", str(args.trials), "--tune", "lr", "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--seed", str(args.seed),
        "--pretrained-weights", str(weights), "--patience", "0",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"imgclf tune failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    trials = [
        {
            "lr": float(r["lr"]),
            "state": r["state"],
            "valid_accuracy": float(r["valid_accuracy"]) if r["valid_accuracy"] not in ("", "None") else None,
            "epochs_run": int(r["epochs_run"]),
            "seconds": float(r["seconds"]) if r["seconds"] else None,
        }
        for r in rows
    ]
    tb.progress(f"imgclf tune: {len(trials)} trials in {wall:.1f} s")
    return {"trials": trials, "wall_seconds": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tune.json"))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-per-class", type=int, default=30)
    parser.add_argument("--valid-per-class", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", choices=("digits", "random"), default="digits")
    parser.add_argument("--weights-cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="imgclf-tune-bench-"))
    try:
        counts = tb.make_subset(work / "data", args.train_per_class, args.valid_per_class)
        weights = tb.backbone_weights(args, work / "data")
        env = tb.environment(args)
        tb.progress(f"data {counts}, {args.trials} trials of {args.epochs} epochs each side")
        seed = seed_style_search(args, work / "data", weights)
        ours = imgclf_tune(args, work / "data", weights, work / "tune")
        best = {
            "seed_style": max(t["valid_accuracy"] for t in seed["trials"]),
            "imgclf_tune": max(t["valid_accuracy"] for t in ours["trials"] if t["valid_accuracy"] is not None),
        }
        result = {
            "benchmark": "tune",
            "environment": env,
            "settings": {
                "trials": args.trials,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "seed": args.seed,
                "images": counts,
                "weights": args.weights,
                "space": "lr log-uniform 0.001-0.1",
            },
            "seed_style": seed,
            "imgclf_tune": ours,
            "best_valid_accuracy": best,
            "ratios": {
                "tune_speedup_wall": seed["wall_seconds"] / ours["wall_seconds"],
                "tune_best_accuracy_delta": best["imgclf_tune"] - best["seed_style"],
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        tb.progress(f"wrote {args.out}")
        for key, value in result["ratios"].items():
            print(f"{key}: {value:.3f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
