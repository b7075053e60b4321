"""Channel formats: what a train/valid/test channel may hold, detected per channel or named by `data-format`, and
`load_channel`, which reads a channel in any of them.

imagefolder   <class>/<image files> (torchvision ImageFolder).
hdf5          one .h5/.hdf5 file whose datasets are keyed by image id and hold encoded image bytes (JPEG/PNG, as a
              scalar bytes value or a 1-D uint8 array) or pixel arrays (H,W / H,W,C / C,H,W uint8), plus a CSV or
              JSON Lines labels file with an id column and a label column (`id-column`, `label-column`), e.g.
              the ISIC 2024 layout: train-image.hdf5 + train-metadata.csv with id-column=isic_id label-column=target.
              Read lazily: each DataLoader worker opens the file itself, images are decoded when drawn.
manifest      a CSV or JSON Lines file (`.csv`, `.jsonl`, `.manifest`, `.json`) with a path relative to the channel
              (`path-column`, or SageMaker's `source-ref` with the s3:// prefix resolved inside the channel) and a
              label (`label-column`; a SageMaker Ground Truth `<label>-metadata.class-name` is used when present).
webdataset    .tar shards of KEY.jpg/png/webp + KEY.cls or KEY.json (`label-column`), streamed: see shards.py.

Auto-detection: an HDF5 file at the channel's top level -> hdf5; else .tar files there -> webdataset; else a
labels/manifest file there -> manifest; else imagefolder. Bad rows (image missing, bytes that do not decode, an
empty label or, in valid/test, a label train does not have) are skipped, counted by reason and logged; a channel
with none left is a UserError.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgclf import channels, shards
from imgclf.errors import UserError
from imgclf.images import open_rgb

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TABLE_SUFFIXES = (".csv", ".jsonl", ".manifest", ".json")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError)


@dataclass(frozen=True)
class FormatOptions:
    data_format: str = "auto"
    labels_file: str = ""
    id_column: str = "id"
    label_column: str = "label"
    path_column: str = "path"
    # Decode every image before training (File mode); off for FastFile, where that would fetch the whole dataset
    # once before the first step: bad images are then skipped when first read (loaders.ImageDataset).
    check_images: bool = True

    @classmethod
    def from_hyperparameters(cls, hp: Any) -> FormatOptions:
        return cls(hp.data_format, hp.labels_file, hp.id_column, hp.label_column, hp.path_column)


# ---- detection and tables -------------------------------------------------------------------------------------


def _top_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes and p.name[0] != ".")


def detect_format(root: Path, options: FormatOptions) -> str:
    if options.data_format != "auto":
        return options.data_format
    # One listing of the root for every format's test: on FastFile each listing is an S3 request.
    suffixes = {p.suffix.lower() for p in _top_files(root, (*HDF5_SUFFIXES, shards.SHARD_SUFFIX, *TABLE_SUFFIXES))}
    if suffixes & set(HDF5_SUFFIXES):
        return "hdf5"
    if shards.SHARD_SUFFIX in suffixes:
        return "webdataset"
    if options.labels_file or suffixes & set(TABLE_SUFFIXES):
        return "manifest"
    return "imagefolder"


def _labels_file(root: Path, options: FormatOptions, channel: str, fmt: str) -> Path:
    if options.labels_file:
        path = root / options.labels_file
        if not _inside(root, path):
            raise UserError(
                f"labels-file {options.labels_file!r} lies outside the {channel} channel {root}: name a file in it."
            )
        if not path.is_file():
            raise UserError(f"labels-file {options.labels_file!r} not found in the {channel} channel {root}.")
        return path
    tables = _top_files(root, TABLE_SUFFIXES)
    what = "a CSV/JSON Lines file of id,label" if fmt == "hdf5" else "a CSV/JSON Lines manifest of path,label"
    if not tables:
        raise UserError(f"The {channel} channel {root} ({fmt}) needs {what}; found none at its top level.")
    if len(tables) > 1:
        names = ", ".join(p.name for p in tables)
        raise UserError(f"The {channel} channel {root} has several labels files ({names}); set labels-file.")
    return tables[0]


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV (header row) or JSON Lines file (also a JSON array in a .json file)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(stripped)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {n} is not JSON: {exc}.") from None
    if not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path} must hold one JSON object per line.")
    return rows


def _require_column(rows: list[dict], column: str, path: Path, hyperparameter: str, fallback: str = "") -> str:
    if not rows:
        raise UserError(f"{path} has no rows.")
    present = {k for r in rows[:100] for k in r}
    if column in present:
        return column
    if fallback and fallback in present:
        return fallback
    raise UserError(
        f"{path} has no column {column!r} (set the {hyperparameter} hyperparameter). "
        f"Columns: {', '.join(sorted(present))[:600]}."
    )


def _label_text(row: dict, column: str) -> str:
    """The class name of a row: SageMaker Ground Truth rows carry it in `<column>-metadata.class-name`."""
    meta = row.get(f"{column}-metadata")
    if isinstance(meta, dict) and meta.get("class-name") not in (None, ""):
        return str(meta["class-name"])
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def sort_labels(labels: set[str]) -> list[str]:
    """Class order: numerically when every label is a number (0, 1, ..., 10), else alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


# ---- decoding ---------------------------------------------------------------------------------------------------


def decode_value(value: Any) -> Image.Image:
    """An HDF5 dataset's value as an RGB image: encoded bytes (bytes / np.bytes_ / np.void / 1-D uint8) or pixels."""
    if isinstance(value, np.void):
        value = value.tobytes()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bytes, bytearray)):
        return open_rgb(io.BytesIO(value))
    if not isinstance(value, np.ndarray):
        raise ValueError(f"unsupported HDF5 value of type {type(value).__name__}")
    if value.ndim == 1 and value.dtype == np.uint8:
        return open_rgb(io.BytesIO(value.tobytes()))
    if value.ndim == 3 and value.shape[-1] not in (1, 3, 4) and value.shape[0] in (1, 3, 4):
        value = np.moveaxis(value, 0, -1)  # C,H,W -> H,W,C
    if value.ndim == 3 and value.shape[-1] == 1:
        value = value[..., 0]
    if value.ndim not in (2, 3) or value.dtype != np.uint8:
        raise ValueError(f"unsupported HDF5 array of shape {value.shape} and dtype {value.dtype} (want uint8 pixels)")
    return Image.fromarray(np.ascontiguousarray(value)).convert("RGB")


class HDF5Reader:
    """key -> RGB image from one HDF5 file, opened lazily once per process (each DataLoader worker has its own
    handle: h5py handles must not cross a fork). Pickles as just the path."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._file = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}

    def __call__(self, key: str) -> Image.Image:
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return decode_value(self._file[key][()])


# ---- channels ---------------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Candidate (key, label name) pairs before images are checked, and the rows already refused."""

    items: list[tuple[str, str]]
    skipped: Counter


def _candidate_rows(
    rows: list[dict], key_column: str, label_column: str, classes: Sequence[str] | None
) -> tuple[list[tuple[str, str]], Counter]:
    items, skipped = [], Counter()
    known = set(classes) if classes is not None else None
    for row in rows:
        key = row.get(key_column)
        label = _label_text(row, label_column)
        if key in (None, ""):
            skipped["no image key"] += 1
        elif not label or (known is not None and label not in known):
            skipped["unknown label"] += 1
        else:
            items.append((str(key).strip(), label))
    return items, skipped


def _index(items: list[tuple[str, str]], classes: Sequence[str] | None) -> tuple[list[channels.Sample], list[str]]:
    if classes is None:
        classes = sort_labels({label for _, label in items})
    index = {name: i for i, name in enumerate(classes)}
    return [(key, index[label]) for key, label in items], list(classes)


def _finish(
    root: Path,
    channel: str,
    fmt: str,
    samples: list[channels.Sample],
    classes: list[str],
    skipped: Counter,
    reader,
) -> channels.Channel:
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        log.warning(
            "%s channel (%s): skipped %d row(s) (%s), kept %d image(s)",
            channel,
            fmt,
            sum(skipped.values()),
            reasons,
            len(samples),
        )
    if not samples:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "no rows"
        raise UserError(f"The {channel} channel {root} ({fmt}) has no usable images ({reasons}).")
    skipped_list = [f"{why}" for why, n in skipped.items() for _ in range(n)]
    return channels.Channel(samples=samples, classes=classes, skipped=skipped_list, reader=reader, format=fmt)


def _subsample(items: list[tuple[str, str]], sample: float, seed: int) -> list[tuple[str, str]]:
    if sample <= 0:
        return items
    samples, classes = _index(items, None)
    picked = channels.stratified_sample(samples, sample, seed)
    return [(key, classes[label]) for key, label in picked]


def _hdf5_channel(
    root: Path, options: FormatOptions, classes: Sequence[str] | None, channel: str, sample: float, seed: int
) -> channels.Channel:
    try:
        import h5py
    except ImportError:
        raise UserError("HDF5 channels need the h5py package (pip install h5py); it is in the train image.") from None

    files = _top_files(root, HDF5_SUFFIXES)
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise UserError(f"The {channel} channel {root} (hdf5) needs exactly one .h5/.hdf5 file; found {found}.")
    table_path = _labels_file(root, options, channel, "hdf5")
    rows = read_table(table_path)
    id_col = _require_column(rows, options.id_column, table_path, "id-column")
    label_col = _require_column(rows, options.label_column, table_path, "label-column")
    items, skipped = _candidate_rows(rows, id_col, label_col, classes)
    items = _subsample(items, sample, seed)
    good = []
    try:
        h5 = h5py.File(files[0], "r")
    except OSError as exc:
        raise UserError(f"{files[0]} is not a readable HDF5 file: {exc}.") from None
    with h5:
        for key, label in items:
            if key not in h5:
                skipped["missing image"] += 1
                continue
            if not options.check_images:
                good.append((key, label))
                continue
            try:
                decode_value(h5[key][()])
            except _DECODE_ERRORS:
                skipped["undecodable image"] += 1
                continue
            good.append((key, label))
    samples, names = _index(good, classes)
    return _finish(root, channel, "hdf5", samples, names, skipped, HDF5Reader(files[0]))


def _inside(root: Path, path: Path) -> bool:
    """Whether `path` (symlinks and .. resolved) lies in the channel: a manifest or labels-file never reaches out."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


OUTSIDE = "path outside the channel"


def _resolve(root: Path, value: str) -> Path | str:
    """A manifest path inside the channel; an s3:// URI matches the longest key suffix present in the channel.
    Else the reason it is skipped: "missing image", or OUTSIDE for a path (absolute, .., a symlink) that leaves it."""
    if value.startswith("s3://"):
        parts = value[len("s3://") :].split("/")[1:]
        for i in range(len(parts)):
            candidate = root.joinpath(*parts[i:])
            if candidate.is_file():
                return candidate if _inside(root, candidate) else OUTSIDE
        return "missing image"
    candidate = Path(value) if os.path.isabs(value) else root / value
    if not _inside(root, candidate):
        return OUTSIDE
    return candidate if candidate.is_file() else "missing image"


def _manifest_channel(
    root: Path, options: FormatOptions, classes: Sequence[str] | None, channel: str, sample: float, seed: int
) -> channels.Channel:
    table_path = _labels_file(root, options, channel, "manifest")
    rows = read_table(table_path)
    path_col = _require_column(rows, options.path_column, table_path, "path-column", fallback="source-ref")
    label_col = _require_column(rows, options.label_column, table_path, "label-column")
    items, skipped = _candidate_rows(rows, path_col, label_col, classes)
    items = _subsample(items, sample, seed)
    good = []
    for key, label in items:
        path = _resolve(root, key)
        if isinstance(path, str):
            skipped[path] += 1
        elif options.check_images and not channels.readable(str(path)):
            skipped["undecodable image"] += 1
        else:
            good.append((str(path), label))
    samples, names = _index(good, classes)
    return _finish(root, channel, "manifest", samples, names, skipped, None)


def load_channel(
    root: str | Path,
    options: FormatOptions = FormatOptions(),
    classes: Sequence[str] | None = None,
    channel: str = "train",
    sample: float = 0,
    seed: int = 0,
) -> channels.Channel:
    """A channel's readable images in any format. `classes` (valid/test) fixes the class list to train's;
    `sample` draws a stratified subsample (N images or a fraction) before images are checked, so a large HDF5
    file is only read where it is used."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"The {channel} channel {root} does not exist or is not a directory.")
    fmt = detect_format(root, options)
    log.info("%s channel %s: %s format", channel, root, fmt)
    if fmt == "hdf5":
        return _hdf5_channel(root, options, classes, channel, sample, seed)
    if fmt == "manifest":
        return _manifest_channel(root, options, classes, channel, sample, seed)
    if fmt == "webdataset":
        return shards.load_shard_channel(root, options.label_column, classes, channel, sample, seed)
    ch = channels.scan_image_folder(root, classes, channel=channel, check_images=options.check_images)
    if sample > 0:
        ch.samples = channels.stratified_sample(ch.samples, sample, seed)
    return ch
