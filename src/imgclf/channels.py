"""Channels: where a run's train/valid/test data is (`resolve_channels`, the one resolution), the ImageFolder
layout with bad-file handling, and the stratified split/sample every format uses.

The other formats (hdf5, manifest) and `load_channel`, which reads a channel in any format: channel_formats.py.
The embedded digits sample (the fallback when no data is given): sample_data.py.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imgclf.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CHANNELS = ("train", "valid", "test")
# Channel names users gave the seeds' estimators for the same thing.
CHANNEL_ALIASES = {"validation": "valid", "val": "valid", "training": "train", "testing": "test"}

Sample = tuple[str, int]  # (path, class index)


def readable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


@dataclass
class Channel:
    """The readable images of one channel and the class names they index into.

    `reader` opens a sample's key (None: keys are file paths, `images.open_rgb`); `format` names the layout."""

    samples: list[Sample]
    classes: list[str]
    skipped: list[str]
    reader: Callable[[str], Image.Image] | None = None
    format: str = "imagefolder"


def scan_image_folder(
    root: str | Path, classes: Sequence[str] | None = None, channel: str = "train", check_images: bool = True
) -> Channel:
    """ImageFolder layout: root/<class>/<image>. Unreadable files are skipped, counted and logged.

    `classes` fixes the class list (valid/test must use train's); a class there with no folder is fine,
    a folder not in it is an error. One listing of the root and one walk of each class folder, no stat per file
    (os.walk's entries carry the file type); `check_images=False` (FastFile: every open is a fetch from S3) does
    not open the images now: a bad one is skipped when the loader first reads it.
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
                if not check_images or readable(path):
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


def class_counts(samples: list[Sample]) -> Counter:
    return Counter(label for _, label in samples)


# ---- where the channels are ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelPaths:
    """The directories of a run's channels; valid and test are optional."""

    train: Path
    valid: Path | None = None
    test: Path | None = None


def resolve_channels(
    data: Path | None = None, *, train: Path | None = None, valid: Path | None = None, test: Path | None = None
) -> ChannelPaths | None:
    """The one channel resolution: DATA holding train/ (and optional valid/, test/) channel folders, or DATA itself
    as the train channel; explicit channels override it. None when neither DATA nor a train channel is given
    (the caller then falls back to the embedded sample, `sample_data.write_fallback_sample`)."""
    if data is None and train is None:
        return None
    if data is not None and not data.is_dir():
        raise UserError(f"--data {data} is not a directory.")
    nested = data is not None and (data / "train").is_dir()
    return ChannelPaths(
        train=train or (data / "train" if nested else data),
        valid=valid or (data / "valid" if nested and (data / "valid").is_dir() else None),
        test=test or (data / "test" if nested and (data / "test").is_dir() else None),
    )


def canonical_channels(named: Mapping[str, str | Path]) -> dict[str, Path]:
    """SageMaker channel name -> directory, with the seeds' aliases (validation, training, ...) mapped to
    train/valid/test; any other channel is ignored with a warning."""
    out = {}
    for name, path in named.items():
        canonical = CHANNEL_ALIASES.get(name, name)
        if canonical not in CHANNELS:
            log.warning("Ignoring unknown channel %r (imgclf reads train, valid, test)", name)
            continue
        out[canonical] = Path(path)
    return out
