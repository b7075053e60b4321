"""Tar shards vs ImageFolder, side by side in one run (ratios, not absolute speeds, are the result):

1. a generated dataset of N small images (the embedded digits, upscaled with noise, as PNG files in ImageFolder
   layout): local disk used by the folder and by its shards, and `imgclf shard`'s conversion speed;
2. data pipeline throughput, no model: images/s decoded and transformed (eval transform at --image-size) by a
   DataLoader with --workers workers, from the folder (map-style, random order) and from the shards (streamed,
   shuffle buffer), plus each channel's load time (the folder verifies every file, shards read their index);
3. training wall time on the embedded sample, ImageFolder vs its shards, same hyperparameters, with the test
   accuracy each reaches (--train-epochs 0 skips it).

    PYTHONPATH=src .venv/bin/python benchmarks/shard_bench.py --images 20000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgclf import channel_formats, sample_data, shard_writer, shards
from imgclf.artifact import ModelMeta
from imgclf.hyperparameters import Hyperparameters
from imgclf.images import eval_transform
from imgclf.training import RunConfig, fit
from imgclf.training.loaders import ImageDataset, collate_skip_bad


def generate(root: Path, n: int, size: int, seed: int = 0) -> None:
    """N images: digits upscaled to size x size with Gaussian noise, as ImageFolder PNGs."""
    images, labels = sample_data.load_digits()
    rng = np.random.default_rng(seed)
    for i in range(n):
        j = i % len(labels)
        big = np.kron(images[j].astype(np.float32), np.ones((size // 8, size // 8), np.float32))
        noisy = np.clip(big + rng.normal(0, 24, big.shape), 0, 255).astype(np.uint8)
        folder = root / str(labels[j])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy, "L").save(folder / f"{i:06d}.png")


def disk_bytes(root: Path) -> int:
    """Blocks allocated on disk (what fills a volume: a 1 KB file takes a 4 KB block)."""
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(root) for f in files)


def throughput(dataset, workers: int, batch_size: int = 64, shuffle: bool = False) -> tuple[float, int]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=shuffle,
        collate_fn=collate_skip_bad,
        generator=torch.Generator().manual_seed(0) if shuffle else None,
    )
    t0, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch[1])
    return count / (time.perf_counter() - t0), count


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pipeline(work: Path, args) -> None:
    folder, out = work / "folder", work / "shards"
    _, gen_s = timed(lambda: generate(folder, args.images, args.size))
    print(f"generated {args.images} images of {args.size}x{args.size} px in {gen_s:.1f} s")
    done, convert_s = timed(lambda: shard_writer.convert(folder, out, shard_size=args.shard_size))
    n_shards = done["train"]["shards"]
    print(f"conversion: {args.images / convert_s:.0f} images/s ({convert_s:.1f} s, {n_shards} shards)")
    folder_disk, shard_disk = disk_bytes(folder), disk_bytes(out)
    print(
        f"disk: ImageFolder {folder_disk / 2**20:.1f} MiB, shards {shard_disk / 2**20:.1f} MiB "
        f"(shards/folder {shard_disk / folder_disk:.2f}); peak during conversion: both, "
        f"{(folder_disk + shard_disk) / 2**20:.1f} MiB"
    )
    transform = eval_transform(ModelMeta.for_training("resnet18", 10, args.image_size))
    folder_ch, folder_load = timed(lambda: channel_formats.load_channel(folder))
    shard_ch, shard_load = timed(lambda: channel_formats.load_channel(out))
    print(f"channel load: ImageFolder {folder_load:.2f} s (verifies every file), shards {shard_load:.2f} s (index)")
    # Passes alternate (folder, shards, folder, ...) so a machine whose load drifts weighs on both alike.
    stream = shards.ShardStream(shard_ch.reader, shard_ch.samples, transform, shuffle=True)
    rates = {"folder": [], "shards": []}
    for _ in range(args.rounds):
        rates["folder"].append(throughput(ImageDataset(folder_ch.samples, transform), args.workers, shuffle=True)[0])
        rates["shards"].append(throughput(stream, args.workers)[0])
    f_rate, s_rate = (statistics.median(rates[k]) for k in ("folder", "shards"))
    print(
        f"pipeline ({args.workers} workers, {args.image_size} px, median of {args.rounds} alternating passes): "
        f"ImageFolder {f_rate:.0f} images/s, shards {s_rate:.0f} images/s; shards/folder {s_rate / f_rate:.2f}"
    )


def training(work: Path, args) -> None:
    data = work / "sample"
    sample_data.write_sample_data(data)
    shard_writer.convert(data, work / "sample-shards", shard_size=200)
    hp = Hyperparameters.from_mapping(
        {
            "pretrained-weights": "none",
            "train-backbone": "true",
            "augment": "false",
            "image-size": "32",
            "epochs": str(args.train_epochs),
            "batch-size": "32",
            "lr": "0.003",
            "num-workers": str(args.workers),
        }
    )
    results = {}
    for name, root in (("ImageFolder", data), ("shards", work / "sample-shards")):
        cfg = RunConfig(root / "train", work / f"model-{name}", root / "valid", root / "test")
        results[name], seconds = timed(lambda cfg=cfg: fit(hp, cfg))
        print(f"training on {name}: {seconds:.1f} s, test accuracy {results[name]['test_accuracy']:.4f}")
        results[name]["seconds"] = seconds
    ratio = results["shards"]["seconds"] / results["ImageFolder"]["seconds"]
    print(f"training wall time shards/folder {ratio:.2f} ({args.train_epochs} epochs, {args.workers} workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32, help="Generated image side (a multiple of 8).")
    parser.add_argument("--image-size", type=int, default=64, help="The transform's output size.")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating pipeline passes over each.")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a new temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="shard-bench-"))
    print(f"shard_bench: {os.cpu_count()} CPUs, torch {torch.__version__}, scratch {work}")
    try:
        pipeline(work, args)
        if args.train_epochs:
            training(work, args)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
