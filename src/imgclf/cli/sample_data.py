"""`imgclf sample-data DIR`: the embedded digits as ImageFolder PNGs."""

from __future__ import annotations

import argparse

from imgclf.sample_data import write_sample_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="DIR", help="Where to write train/, valid/ and test/.")
    parser.add_argument("--seed", type=int, default=0, help="Split seed (default 0).")


def run(args: argparse.Namespace) -> int:
    counts = write_sample_data(args.out_dir, seed=args.seed)
    print(
        f"Wrote {sum(counts.values())} digit images to {args.out_dir}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0
