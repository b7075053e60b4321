"""`imgclf shard --data DIR --out DIR`: convert a dataset (imagefolder, hdf5, manifest; DIR or its train/valid/test)
into tar shards for streaming (`data-format webdataset`). See imgclf.shard_writer."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgclf import channel_formats, shard_writer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="A channel, or a folder of train/valid/test ones.")
    parser.add_argument("--out", type=Path, required=True, help="Where the shards go (empty, or an earlier run's).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=int, default=0, help="Images per shard (default 1000).")
    size.add_argument("--shard-mb", type=float, default=0, help="About this many MB per shard instead.")
    parser.add_argument("--force", action="store_true", help="Replace shards an earlier conversion left in --out.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the stratified shuffle.")
    for flag, default in (("--data-format", "auto"), ("--labels-file", ""), ("--id-column", "id")):
        parser.add_argument(flag, default=default, help="As the hyperparameter of the same name.")
    parser.add_argument("--label-column", default="label", help="As the hyperparameter of the same name.")
    parser.add_argument("--path-column", default="path", help="As the hyperparameter of the same name.")


def run(args: argparse.Namespace) -> int:
    options = channel_formats.FormatOptions(
        args.data_format, args.labels_file, args.id_column, args.label_column, args.path_column
    )
    shard_size = args.shard_size or (0 if args.shard_mb else 1000)
    done = shard_writer.convert(
        args.data,
        args.out,
        shard_size=shard_size,
        shard_mb=args.shard_mb,
        force=args.force,
        seed=args.seed,
        options=options,
    )
    for split, n in done.items():
        print(f"{split}: {n['images']} images in {n['shards']} shard(s) ({n['reused']} already there, checked)")
    print(f"Shards in {args.out}: train with --data {args.out}")
    return 0
