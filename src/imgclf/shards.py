"""Tar shards (the WebDataset layout) as a channel format: `data-format webdataset`, detected when a channel's top
level holds `.tar` files.

A sample is the members of one shard that share a KEY (the member name up to the first dot of its base name):
KEY.jpg/.jpeg/.png/.webp and its label, KEY.cls (a class index or name) or KEY.json (the `label-column` field).
Class names come from classes.txt (one per line) or index_to_name.json in the channel, else from the labels seen.

Loading a channel indexes it (keys and labels, no image bytes): from shards.json, which `imgclf shard` writes beside
its shards, or by walking each shard's tar headers and label members. The rest of the trainer then handles the
samples as any other channel's (stratified valid split, `sample`, class weights, checkpoint identity); only
reading differs: `ShardStream` reads each shard front to back (tarfile's stream mode, no seeks), keeps the wanted
keys, and shuffles through a buffer, deterministic for a seed and an epoch.

Splitting between processes, the interface with the multi-host input side:
  `shards_for(shards, rank, world_size)`   the shards process `rank` of `world_size` reads (round-robin).
  the trainer passes `Layout.data_split(...)`: every process of the job (the channel is whole on every host).
DataLoader workers split a process's shards again the same way. Fewer shards than processes is refused (see
`ShardStream`). Images are decoded in the stream: one that fails is logged, counted and yielded as None (dropped
by `collate_skip_bad`), so every process still yields the same number of batches and DDP stays in step.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image

from imgclf import channels
from imgclf.errors import UserError
from imgclf.images import open_rgb

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".tar"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
INDEX_FILE = "shards.json"
CLASSES_FILE = "classes.txt"
INDEX_TO_NAME = "index_to_name.json"
SHUFFLE_BUFFER = 2000  # samples held for shuffling per reader: ~2000 x a small encoded image of memory
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

T = TypeVar("T")


# ---- the split between processes ----------------------------------------------------------------------------------


def shards_for(shards: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The shards process `rank` of `world_size` reads: every world_size-th one from `rank`. Disjoint across ranks
    and together all of them; round-robin so the short last shard does not leave one process with less."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return list(shards[rank::world_size])


# ---- keys ---------------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """(KEY, extension) of a tar member: the extension starts at the first dot of the base name (WebDataset)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (dot + ext).lower()


def sample_key(shard: str, key: str) -> str:
    """A sample's key in a channel's listing: the shard's file name (top level, so no '/') and the key in it."""
    return f"{shard}/{key}"


def _shard_and_key(sample: str) -> tuple[str, str]:
    shard, _, key = sample.partition("/")
    return shard, key


# ---- indexing a channel -------------------------------------------------------------------------------------------


def shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == SHARD_SUFFIX and p.name[0] != ".")


def class_map(root: Path) -> list[str] | None:
    """Class names by index from classes.txt or index_to_name.json in the channel, or None."""
    if (root / CLASSES_FILE).is_file():
        names = [line.strip() for line in (root / CLASSES_FILE).read_text(encoding="utf-8").splitlines()]
        return [n for n in names if n]
    if (root / INDEX_TO_NAME).is_file():
        try:
            table = json.loads((root / INDEX_TO_NAME).read_text(encoding="utf-8"))
            return [str(table[str(i)]) for i in range(len(table))]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{root / INDEX_TO_NAME} must map 0..N-1 to class names.") from None
    return None


def _label_name(text: str, names: Sequence[str] | None) -> str:
    """A .cls/.json label as a class name: an index into the channel's class map, else the text itself."""
    if names is not None and text.isdigit() and int(text) < len(names):
        return names[int(text)]
    return text


def scan_shard(path: Path, label_column: str) -> tuple[list[tuple[str, str]], Counter]:
    """(key, label text) of each sample in a shard, from its tar headers and label members (image bytes are
    skipped, not read), and the samples refused by reason."""
    from imgclf.channel_formats import _label_text

    images, labels, skipped = [], {}, Counter()
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_name(member.name)
                if ext in IMAGE_SUFFIXES:
                    images.append(key)
                elif ext in (".cls", ".json") and key not in labels:
                    raw = tar.extractfile(member).read(1 << 20).decode("utf-8", "replace").strip()
                    if ext == ".json":
                        try:
                            raw = _label_text(json.loads(raw), label_column) if raw.startswith("{") else ""
                        except ValueError:
                            raw = ""
                    labels[key] = raw
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{path} is not a readable tar shard: {exc}.") from None
    items, seen = [], set()
    for key in images:
        if key in seen:
            continue
        seen.add(key)
        if labels.get(key):
            items.append((key, labels[key]))
        else:
            skipped["missing label"] += 1
    skipped["label without image"] += len(set(labels) - seen)
    return items, +skipped


def _indexed(root: Path) -> dict[str, dict]:
    """shards.json's entries (name -> {bytes, samples}) for the shards it still describes (same size on disk)."""
    path = root / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["shards"]
    except (ValueError, KeyError, TypeError):
        log.warning("Ignoring %s: not a shard index", path)
        return {}
    return {
        name: entry
        for name, entry in entries.items()
        if (root / name).is_file() and (root / name).stat().st_size == entry.get("bytes")
    }


def load_shard_channel(
    root: Path, label_column: str, classes: Sequence[str] | None, channel: str, sample: float, seed: int
):
    """A channel of tar shards as a `channels.Channel` of (shard/KEY, class index) samples read by `ShardSource`."""
    from imgclf import channel_formats

    files = shard_files(root)
    if not files:
        raise UserError(f"The {channel} channel {root} (webdataset) has no .tar shards at its top level.")
    names = class_map(root)
    indexed = _indexed(root)
    items, skipped = [], Counter()
    for path in files:
        entry = indexed.get(path.name)
        if entry is not None:
            found = [(str(key), str(label)) for key, label in entry["samples"]]
        else:
            found, bad = scan_shard(path, label_column)
            skipped.update(bad)
        items.extend((sample_key(path.name, key), _label_name(label, names)) for key, label in found)
    if len(indexed) < len(files):
        log.info("%s channel: indexed %d shard(s) by reading their headers", channel, len(files) - len(indexed))
    if classes is None and names is not None:
        classes = names
    elif classes is not None:
        # valid/test without a class map of their own: a number that is not a class name indexes train's classes.
        items = [(key, _label_name(label, None if label in classes else classes)) for key, label in items]
    known = set(classes) if classes is not None else None
    kept = [(k, label) for k, label in items if known is None or label in known]
    skipped["unknown label"] += len(items) - len(kept)
    kept = channel_formats._subsample(kept, sample, seed)
    samples, class_names = channel_formats._index(kept, classes)
    return channel_formats._finish(
        root, channel, "webdataset", samples, class_names, +skipped, ShardSource(str(root), len(files))
    )


# ---- reading ------------------------------------------------------------------------------------------------------


class ShardSource:
    """Where a shard channel's samples are read from (its directory); `loaders` streams a split through it."""

    def __init__(self, root: str, shard_count: int):
        self.root = root
        self.shard_count = shard_count


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ShardStream(torch.utils.data.IterableDataset):
    """A split's samples read shard by shard, front to back, by process `rank` of `world_size` (its shards per
    `shards_for`, split again between its DataLoader workers). With `shuffle`, the shard order and a buffer of
    SHUFFLE_BUFFER samples are shuffled by (seed, epoch, rank, worker); an epoch is one pass (each copy of the
    dataset counts its own passes: persistent workers keep their copy). Yields (tensor, label), or None for an
    image that does not decode or a listed key the shard no longer holds."""

    def __init__(
        self,
        source: ShardSource,
        samples: list[channels.Sample],
        transform,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = False,
    ):
        wanted: dict[str, dict[str, int]] = defaultdict(dict)
        for sample, label in samples:
            shard, key = _shard_and_key(sample)
            wanted[shard][key] = label
        every = sorted(wanted)
        if len(every) < world_size:
            # Splitting samples by index instead would make every process read every shard: world_size times
            # the I/O that shards are there to avoid. More, smaller shards are cheap.
            raise UserError(
                f"{len(every)} shard(s) with samples for {world_size} training processes: each process needs at "
                f"least one shard. Re-shard with a smaller --shard-size (imgclf shard) to make {world_size} or more."
            )
        self.root = Path(source.root)
        self.wanted = {shard: wanted[shard] for shard in shards_for(every, rank, world_size)}
        self.transform = transform
        self.rank, self.seed, self.shuffle = rank, seed, shuffle
        self.passes = 0
        self.bad = 0

    def _my_shards(self) -> list[str]:
        worker, workers = _worker()
        return shards_for(sorted(self.wanted), worker, workers) if worker < len(self.wanted) else []

    def sample_count(self) -> int:
        return sum(len(keys) for keys in self.wanted.values())

    def sample_keys(self) -> list[str]:
        """The channel keys (shard/KEY, the same on every host) this process's stream reads in every pass: each
        listed sample of its shards, once."""
        return [sample_key(shard, key) for shard, keys in self.wanted.items() for key in keys]

    def batches(self, batch_size: int, workers: int, drop_last: bool = False) -> int:
        """Batches a DataLoader yields per pass: each worker batches its own shards (its last batch partial, or
        dropped with `drop_last`)."""
        names = sorted(self.wanted)
        per_worker = [shards_for(names, w, workers) for w in range(min(workers, len(names)))] if workers else [names]
        count = math.floor if drop_last else math.ceil
        return sum(count(sum(len(self.wanted[s]) for s in group) / batch_size) for group in per_worker)

    def _read(self, shard: str) -> Iterator:
        keys = self.wanted[shard]
        done = set()
        try:
            with tarfile.open(self.root / shard, "r|") as tar:
                for member in tar:
                    key, ext = split_name(member.name)
                    if ext not in IMAGE_SUFFIXES or key not in keys or key in done or not member.isfile():
                        continue
                    done.add(key)
                    yield self._decode(f"{shard}/{member.name}", tar.extractfile(member).read(), keys[key])
        except (tarfile.TarError, OSError, EOFError) as exc:
            log.warning("Shard %s ends early: %s", shard, exc)
        for _ in range(len(keys) - len(done)):
            self.bad += 1
            yield None
        if len(done) < len(keys):
            log.warning("Shard %s: %d listed sample(s) not found", shard, len(keys) - len(done))

    def _decode(self, name: str, data: bytes, label: int):
        try:
            return self.transform(open_rgb(io.BytesIO(data))), label
        except _DECODE_ERRORS as exc:
            self.bad += 1
            log.warning("Skipping %s: %s", name, exc)
            return None

    def __iter__(self) -> Iterator:
        worker, _ = _worker()
        rng = random.Random(f"{self.seed}/{self.passes}/{self.rank}/{worker}")
        self.passes += 1
        self.bad = 0
        order = self._my_shards()
        if self.shuffle:
            rng.shuffle(order)
        stream = (item for shard in order for item in self._read(shard))
        yield from _buffered(stream, rng) if self.shuffle else stream
        if self.bad:
            log.warning("Shard stream (rank %d, worker %d): skipped %d bad sample(s)", self.rank, worker, self.bad)


def _buffered(stream: Iterator, rng: random.Random, size: int = SHUFFLE_BUFFER) -> Iterator:
    """Shuffle through a buffer: fill it, then yield a random element for each new one, then drain it."""
    buffer = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class CappedLoader:
    """A DataLoader cut to `steps` batches per pass: under DDP every process must take the same number of steps,
    and shards give processes slightly different sample counts."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps
        self.sampler = None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        for n, batch in enumerate(self.loader):
            if n >= self.steps:
                break
            yield batch
