"""`imgclf shard`: a dataset in any format the trainer reads (imagefolder, hdf5, manifest) written as tar shards
(shards.py reads them).

Each channel (DATA itself, or DATA's train/valid/test) is read with `channel_formats.load_channel`, so bad files are
skipped exactly as training skips them; its samples are ordered by a stratified shuffle (every class spread evenly
over the order, so every shard holds the class proportions of the whole) and cut into shards of --shard-size
images (--shard-mb: a size in MB turned into a count from the mean size of the channel's first images).
A sample is KEY.<ext> (the file's own bytes for jpg/png/webp, else PNG) and KEY.cls (the class index);
classes.txt, index_to_name.json and shards.json (keys, labels, size and sha256 of every shard) go beside them.

Idempotent: same input and options, same bytes (fixed keys, tar headers without times or owners). Resumable: each
shard is written under a temporary name and renamed when complete, and the plan's fingerprint is kept in OUT, so a
rerun of a killed conversion keeps the shards it finished; a rerun of a finished one checks every shard's sha256.
A non-empty OUT that is not this plan's is refused unless --force.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
import tarfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from imgclf import channel_formats, channels, shards
from imgclf.errors import UserError
from imgclf.images import open_rgb

PLAN_FILE = ".shard-plan.json"
OWN_FILES = (shards.INDEX_FILE, shards.CLASSES_FILE, shards.INDEX_TO_NAME)
MB = 1 << 20


@dataclass
class Split:
    """One channel to convert: its samples in shard order, cut into shards, and how to read a sample's image."""

    name: str
    out: Path
    classes: list[str]
    shards: list[list[channels.Sample]]
    reader: object


def stratified_order(samples: list[channels.Sample], seed: int) -> list[channels.Sample]:
    """Each class shuffled (seeded), then the classes interleaved by relative position, so any run of the order
    holds about the class proportions of the whole."""
    by_class = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    placed = []
    for label, items in by_class.items():
        items = sorted(items)  # input order must not matter
        random.Random(f"{seed}/{label}").shuffle(items)
        placed.extend(((i + 0.5) / len(items), label, s) for i, s in enumerate(items))
    return [s for _, _, s in sorted(placed)]


def payload(key: str, reader) -> tuple[str, bytes]:
    """(extension, bytes) of a sample: an image file's own bytes when its format is one shards carry, else PNG."""
    if reader is None and Path(key).suffix.lower() in shards.IMAGE_SUFFIXES:
        return Path(key).suffix.lower(), Path(key).read_bytes()
    image = reader(key) if reader is not None else open_rgb(key)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return ".png", buf.getvalue()


def _count_for_mb(samples: list[channels.Sample], reader, shard_mb: float) -> int:
    probe = samples[:200]
    mean = sum(len(payload(key, reader)[1]) for key, _ in probe) / len(probe)
    return max(1, int(shard_mb * MB / (mean + 1536)))  # + two 512-byte tar headers and the .cls block


def plan(
    data: Path, out: Path, shard_size: int, shard_mb: float, seed: int, options: channel_formats.FormatOptions
) -> list[Split]:
    paths = channels.resolve_channels(data)
    nested = paths.train != data
    splits, classes = [], None
    for name in channels.CHANNELS:
        root = getattr(paths, name)
        if root is None:
            continue
        ch = channel_formats.load_channel(root, options, classes, channel=name)
        if ch.format == "webdataset":
            raise UserError(f"{root} already holds tar shards.")
        classes = classes or ch.classes
        ordered = stratified_order(ch.samples, seed)
        size = shard_size or _count_for_mb(ordered, ch.reader, shard_mb)
        cut = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        splits.append(Split(name, out / name if nested else out, ch.classes, cut, ch.reader))
    return splits


def fingerprint(splits: list[Split], settings: dict) -> str:
    """What the output depends on: the settings, each split's class list and shard listing, and file sizes."""
    listing = [
        [s.name, s.classes, [[[k, label, _size(k, s.reader)] for k, label in shard] for shard in s.shards]]
        for s in splits
    ]
    return hashlib.sha256(json.dumps([settings, listing]).encode()).hexdigest()


def _size(key: str, reader) -> int:
    return os.path.getsize(key) if reader is None else -1


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def sample_key(n: int) -> str:
    return f"{n:09d}"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # no time or owner: the same input gives the same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, items: list[tuple[str, bytes, int]]) -> None:
    """(key, extension + bytes, class index) samples as a tar, written beside and renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, (ext, data), label in items:
                _add(tar, key + ext, data)
                _add(tar, key + ".cls", str(label).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MB), b""):
            h.update(block)
    return h.hexdigest()


def _clear(out: Path) -> None:
    """--force: remove what a conversion writes (shards, label map, index, plan); refuse to touch anything else."""
    for folder in [out] + [out / name for name in channels.CHANNELS]:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            ours = p.suffix == shards.SHARD_SUFFIX or p.name in OWN_FILES or p.name == PLAN_FILE
            if p.is_file() and (ours or p.name.endswith(".tmp")):
                p.unlink()
        if folder != out and not any(folder.iterdir()):
            folder.rmdir()
    if any(out.iterdir()):
        left = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise UserError(f"--out {out} holds files imgclf shard did not write ({left}); choose an empty directory.")


class Progress:
    """Plain progress lines on stderr, at most one a second, and a last one per split."""

    def __init__(self, total: int):
        self.total, self.done, self.start, self.last = total, 0, time.monotonic(), 0.0

    def update(self, n: int, what: str, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if final or now - self.last >= 1:
            rate = self.done / max(now - self.start, 1e-9)
            print(f"shard: {what}: {self.done}/{self.total} images, {rate:.0f} images/s", file=sys.stderr, flush=True)
            self.last = now


def convert(
    data: Path,
    out: Path,
    *,
    shard_size: int = 0,
    shard_mb: float = 0,
    force: bool = False,
    seed: int = 0,
    options: channel_formats.FormatOptions | None = None,
) -> dict:
    """Write DATA's channels as shards in OUT; returns {split: {"images", "shards", "reused"}}."""
    if bool(shard_size) == bool(shard_mb):
        raise UserError("Give one of --shard-size (images per shard) or --shard-mb (MB per shard).")
    if shard_size < 0 or shard_mb < 0:
        raise UserError("--shard-size and --shard-mb must be positive.")
    data, out = data.resolve(), out.resolve()
    if out == data or data.is_relative_to(out):
        raise UserError(f"--out {out} must not contain --data {data}.")
    splits = plan(data, out, shard_size, shard_mb, seed, options or channel_formats.FormatOptions())
    settings = {"shard_size": shard_size, "shard_mb": shard_mb, "seed": seed, "version": 1}
    print_ = fingerprint(splits, settings)
    plan_path = out / PLAN_FILE
    if out.is_dir() and any(out.iterdir()):
        same = plan_path.is_file() and json.loads(plan_path.read_text()).get("fingerprint") == print_
        if force:
            _clear(out)
        elif not same:
            raise UserError(
                f"--out {out} is not empty and holds no unfinished conversion of this input; "
                "use --force to replace what imgclf shard wrote there."
            )
    out.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({"fingerprint": print_, "data": str(data), **settings}))
    progress = Progress(sum(len(shard) for s in splits for shard in s.shards))
    return {s.name: _write_split(s, progress) for s in splits}


def _write_split(split: Split, progress: Progress) -> dict:
    split.out.mkdir(parents=True, exist_ok=True)
    index, reused, n = {}, 0, 0
    previous = _previous_index(split.out)
    for i, shard in enumerate(split.shards):
        path = split.out / shard_name(i)
        keys = [sample_key(n + j) for j in range(len(shard))]
        n += len(shard)
        if path.is_file():  # finished by an earlier run of this plan (only complete shards carry the final name)
            digest = sha256(path)
            if previous.get(path.name, digest) != digest:
                raise UserError(f"{path} does not match its sha256 in {shards.INDEX_FILE}: rerun with --force.")
            reused += 1
        else:
            write_shard(
                path, [(k, payload(key, split.reader), label) for k, (key, label) in zip(keys, shard, strict=True)]
            )
            digest = sha256(path)
        index[path.name] = {
            "bytes": path.stat().st_size,
            "sha256": digest,
            "samples": [[k, str(label)] for k, (_, label) in zip(keys, shard, strict=True)],
        }
        progress.update(len(shard), f"{split.name} shard {i + 1}/{len(split.shards)}", final=i + 1 == len(split.shards))
    (split.out / shards.CLASSES_FILE).write_text("".join(f"{c}\n" for c in split.classes), encoding="utf-8")
    names = {str(i): c for i, c in enumerate(split.classes)}
    (split.out / shards.INDEX_TO_NAME).write_text(json.dumps(names, indent=1), encoding="utf-8")
    (split.out / shards.INDEX_FILE).write_text(
        json.dumps({"format": "webdataset", "classes": split.classes, "shards": index}), encoding="utf-8"
    )
    return {"images": n, "shards": len(split.shards), "reused": reused}


def _previous_index(folder: Path) -> dict[str, str]:
    try:
        entries = json.loads((folder / shards.INDEX_FILE).read_text(encoding="utf-8"))["shards"]
        return {name: entry["sha256"] for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
