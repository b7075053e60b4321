"""Datasets: ImageFolder channels with bad-file handling, the transforms, and the embedded sample.

Training's evaluation transform is the serving transform (`eval_transform`), built from the artifact's metadata,
so a served image is prepared exactly as validation images were.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from imgclf.errors import UserError
from imgclf.model import ModelMeta

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SAMPLE_SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}

Sample = tuple[str, int]  # (path, class index)


def _interpolation(meta: ModelMeta) -> T.InterpolationMode:
    return T.InterpolationMode(getattr(meta, "interpolation", "bilinear"))


def eval_transform(meta: ModelMeta) -> T.Compose:
    """Resize the short side, center-crop, normalise: validation, test and serving."""
    return T.Compose(
        [
            T.Resize(meta.resize_size, interpolation=_interpolation(meta)),
            T.CenterCrop(meta.image_size),
            T.ToTensor(),
            T.Normalize(meta.mean, meta.std),
        ]
    )


def train_transform(meta: ModelMeta, augment: bool) -> T.Compose:
    if not augment:
        return eval_transform(meta)
    return T.Compose(
        [
            T.Resize(meta.resize_size, interpolation=_interpolation(meta)),
            T.RandomCrop(meta.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(meta.mean, meta.std),
        ]
    )


def open_rgb(path: str) -> Image.Image:
    """Decode fully (catches truncation) and convert greyscale / palette / CMYK / 16-bit to RGB."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "I;16" or img.mode == "I":
            img = img.point(lambda v: v / 256).convert("L")
        return img.convert("RGB")


def _readable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


@dataclass
class Channel:
    """The readable images of one channel and the class names they index into.

    `reader` opens a sample's key (None: keys are file paths, `open_rgb`); `format` names the layout."""

    samples: list[Sample]
    classes: list[str]
    skipped: list[str]
    reader: Callable[[str], Image.Image] | None = None
    format: str = "imagefolder"


def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None, channel: str = "train") -> Channel:
    """ImageFolder layout: root/<class>/<image>. Unreadable files are skipped, counted and logged.

    `classes` fixes the class list (valid/test must use train's); a class there with no folder is fine,
    a folder not in it is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"The {channel} channel {root} does not exist or is not a directory.")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise UserError(
            f"The {channel} channel {root} has no class folders. Expected ImageFolder layout: "
            f"{root}/<class name>/<image files>."
        )
    if classes is None:
        classes = folders
    else:
        extra = sorted(set(folders) - set(classes))
        if extra:
            raise UserError(f"The {channel} channel has classes not in train: {', '.join(extra)}.")
    index = {name: i for i, name in enumerate(classes)}
    samples, skipped, empty = [], [], []
    for name in folders:
        found = 0
        for dirpath, _, files in os.walk(root / name):
            for fname in sorted(files):
                path = os.path.join(dirpath, fname)
                if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                if _readable(path):
                    samples.append((path, index[name]))
                    found += 1
                else:
                    skipped.append(path)
        if found == 0 and channel == "train":
            empty.append(name)
    for path in skipped:
        log.warning("Skipping unreadable image %s", path)
    if skipped:
        log.warning("%s channel: skipped %d unreadable file(s), kept %d image(s)", channel, len(skipped), len(samples))
    if empty:
        raise UserError(
            f"Class folder(s) with no readable image in the {channel} channel {root}: {', '.join(empty)}. "
            "Add images or remove the folder."
        )
    if not samples:
        raise UserError(f"The {channel} channel {root} has no readable images.")
    return Channel(samples=samples, classes=list(classes), skipped=skipped)


def _per_class_counts(sizes: dict[int, int], size: float) -> dict[int, int]:
    """How many of each class to draw: a fraction of each class (`size` < 1), or `size` images in all shared out in
    proportion by largest remainder (`size` >= 1). Every class with two or more images gives at least one and
    keeps at least one, so both sides see every class."""
    total = sum(sizes.values())
    if size < 1:
        counts = {c: round(n * size) for c, n in sizes.items()}
    else:
        want = min(int(size), total)
        exact = {c: n * want / total for c, n in sizes.items()}
        counts = {c: int(e) for c, e in exact.items()}
        by_remainder = sorted(exact, key=lambda c: (-(exact[c] - counts[c]), c))
        for c in by_remainder[: want - sum(counts.values())]:
            counts[c] += 1
    return {c: (min(max(counts[c], 1), n - 1) if n >= 2 else 0) for c, n in sizes.items()}


def stratified_split(samples: list[Sample], size: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(kept, drawn): `size` is a fraction of each class (< 1) or a number of images (>= 1) drawn with label
    proportions kept, at least one per class with two or more. Deterministic for a seed. The one stratified
    function: valid-fraction holds out `drawn`; `sample` trains on `drawn`; the embedded sample is split by it."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s[1]].append(s)
    counts = _per_class_counts({c: len(v) for c, v in by_class.items()}, size)
    rng = random.Random(seed)
    kept, held = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n = counts[label]
        held.extend(items[:n])
        kept.extend(items[n:])
    return kept, held


def stratified_sample(samples: list[Sample], size: float, seed: int) -> list[Sample]:
    """`size` images (>= 1) or that fraction (< 1) of `samples`, label proportions kept; 0 or all: everything."""
    if size <= 0 or size >= len(samples):
        return list(samples)
    return stratified_split(samples, size, seed)[1]


class ImageDataset(torch.utils.data.Dataset):
    """(tensor, label) pairs; an image that fails to decode at read time yields None (see `collate_skip_bad`).

    `reader(key) -> RGB PIL image` opens a sample's key: a file path (`open_rgb`, the default) or, for HDF5
    channels, a dataset name in the file (`imgclf.formats.HDF5Reader`, which opens the file once per worker).
    """

    def __init__(self, samples: list[Sample], transform, reader=None):
        self.samples = samples
        self.transform = transform
        self.reader = reader or open_rgb

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        key, label = self.samples[i]
        try:
            return self.transform(self.reader(key)), label
        except (OSError, ValueError, SyntaxError, KeyError, Image.DecompressionBombError) as exc:
            log.warning("Skipping %s: %s", key, exc)
            return None


def collate_skip_bad(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


def class_counts(samples: list[Sample]) -> Counter:
    return Counter(label for _, label in samples)


# ---- embedded sample ------------------------------------------------------------------------------------------


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
