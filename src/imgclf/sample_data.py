"""The embedded sample: scikit-learn's digits (1,797 real 8x8 images, 10 classes) written out as ImageFolder PNGs,
and the one fallback that trains on it when a run is given no data (`imgclf train` without --data, the train
image with no input channels).
"""

from __future__ import annotations

import gzip
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from imgclf.channels import ChannelPaths, stratified_split

SAMPLE_SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: (N, 8, 8) uint8 images in 0..255 and (N,) labels."""
    raw = resources.files("imgclf").joinpath("sample/digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",")
    pixels = (table[:, :64] * (255 / 16)).round().astype(np.uint8).reshape(-1, 8, 8)
    return pixels, table[:, 64].astype(int)


def write_sample_data(out_dir: str | Path, seed: int = 0) -> dict[str, int]:
    """DIR/{train,valid,test}/<digit>/<n>.png, stratified and deterministic. Returns images per split."""
    out_dir = Path(out_dir)
    images, labels = load_digits()
    samples = [(str(i), int(y)) for i, y in enumerate(labels)]
    rest, test = stratified_split(samples, SAMPLE_SPLITS["test"], seed)
    train, valid = stratified_split(rest, SAMPLE_SPLITS["valid"] / (1 - SAMPLE_SPLITS["test"]), seed)
    counts = {}
    for split, items in (("train", train), ("valid", valid), ("test", test)):
        for idx, label in items:
            folder = out_dir / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[int(idx)], mode="L").save(folder / f"{int(idx):04d}.png")
        counts[split] = len(items)
    return counts


def write_fallback_sample(reason: str) -> ChannelPaths:
    """No data given: write the embedded sample to a new temporary folder, say so, and return its channels."""
    root = Path(tempfile.mkdtemp(prefix="imgclf-sample-"))
    write_sample_data(root)
    print(f"{reason}: training on the embedded digits sample written to {root}", flush=True)
    return ChannelPaths(train=root / "train", valid=root / "valid", test=root / "test")
