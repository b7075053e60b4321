"""Tar shards: `imgclf shard` from every input format (same labelled pixels out as in), idempotent, resumable,
refusing to overwrite; the shard channel reader (index, foreign shards, bad samples) and the rank split."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from unit.test_channel_formats import write_hdf5_channel, write_manifest_channel

from imgclf import channel_formats, shard_writer, shards
from imgclf.channel_formats import FormatOptions
from imgclf.cli import main
from imgclf.errors import UserError
from imgclf.images import open_rgb

pytestmark = pytest.mark.unit


def _pixels(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def _source_set(root: Path, options: FormatOptions | None = None) -> Counter:
    """(class name, pixel hash) of every image a channel holds, read by the trainer's own reader."""
    ch = channel_formats.load_channel(root, options or FormatOptions())
    read = ch.reader or open_rgb
    return Counter((ch.classes[label], _pixels(read(key))) for key, label in ch.samples)


def _stream(root: Path, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = False, samples=None):
    ch = channel_formats.load_channel(root)
    stream = shards.ShardStream(
        ch.reader, samples or ch.samples, _pixels, rank=rank, world_size=world_size, seed=seed, shuffle=shuffle
    )
    return ch, stream


def _shard_set(root: Path) -> Counter:
    ch, stream = _stream(root)
    assert ch.format == "webdataset"
    return Counter((ch.classes[label], digest) for digest, label in stream)


def _small_folder(sample_data: Path, dst: Path, per_class: int = 8) -> Path:
    for class_dir in sorted((sample_data / "train").iterdir()):
        (dst / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.glob("*.png"))[:per_class]:
            shutil.copy(f, dst / class_dir.name / f.name)
    return dst


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_imagefolder_with_splits_converts_to_the_same_labelled_images_with_its_label_map(sample_data, tmp_path):
    done = shard_writer.convert(sample_data, tmp_path / "out", shard_size=150)
    assert set(done) == {"train", "valid", "test"}
    for split in done:
        out = tmp_path / "out" / split
        assert _shard_set(out) == _source_set(sample_data / split)
        assert (out / "classes.txt").read_text().split() == [str(d) for d in range(10)]
        assert json.loads((out / "index_to_name.json").read_text())["3"] == "3"
    train = tmp_path / "out" / "train"
    assert len(shards.shard_files(train)) == done["train"]["shards"] == -(-done["train"]["images"] // 150)
    # Stratified: every full shard holds every class in about the proportions of the whole.
    ch = channel_formats.load_channel(train)
    per_shard = Counter((key.partition("/")[0], label) for key, label in ch.samples)
    assert all(13 <= per_shard[("shard-000000.tar", c)] <= 17 for c in range(10))


@pytest.mark.parametrize("kind", ["hdf5", "manifest"])
def test_hdf5_and_manifest_channels_convert_through_their_own_readers(sample_data, tmp_path, kind):
    src = tmp_path / kind
    if kind == "hdf5":
        write_hdf5_channel(sample_data / "valid", src, per_class=5, encodings=("bytes", "pixels"))
        options = FormatOptions(id_column="isic_id", label_column="target")
    else:
        write_manifest_channel(sample_data / "valid", src, "csv", per_class=5, label_column="digit")
        options = FormatOptions(label_column="digit")
    shard_writer.convert(src, tmp_path / "out", shard_size=16, options=options)
    assert _shard_set(tmp_path / "out") == _source_set(src, options)


def test_the_same_input_gives_the_same_bytes_and_a_rerun_checks_every_shard(sample_data, tmp_path):
    src = _small_folder(sample_data, tmp_path / "src")
    shard_writer.convert(src, tmp_path / "a", shard_size=25)
    shard_writer.convert(src, tmp_path / "b", shard_size=25)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    again = shard_writer.convert(src, tmp_path / "a", shard_size=25)
    assert again["train"]["reused"] == again["train"]["shards"] == 4
    shard = tmp_path / "a" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600:610] = bytes(10) if any(data[600:610]) else b"x" * 10  # same size, other bytes (in the first image)
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        shard_writer.convert(src, tmp_path / "a", shard_size=25)


def test_a_killed_conversion_resumes_keeping_the_finished_shards(sample_data, tmp_path):
    src = _small_folder(sample_data, tmp_path / "src")
    shard_writer.convert(src, tmp_path / "full", shard_size=25)
    out = tmp_path / "killed"
    shard_writer.convert(src, out, shard_size=25)
    # What a kill during shard 2 leaves: shards 0-1 renamed, shard 2 half written under its temporary name.
    for name in ("shard-000002.tar", "shard-000003.tar", "shards.json", "classes.txt", "index_to_name.json"):
        (out / name).unlink()
    (out / ".shard-000002.tar.tmp").write_bytes(b"partial")
    done = shard_writer.convert(src, out, shard_size=25)
    assert done["train"]["reused"] == 2 and done["train"]["shards"] == 4
    assert _bytes(out) == _bytes(tmp_path / "full")


def test_a_non_empty_out_is_refused_without_force_and_force_replaces_only_what_shard_wrote(sample_data, tmp_path):
    src = _small_folder(sample_data, tmp_path / "src")
    out = tmp_path / "out"
    shard_writer.convert(src, out, shard_size=25)
    assert main(["shard", "--data", str(src), "--out", str(out), "--shard-size", "40"]) != 0
    assert len(shards.shard_files(out)) == 4  # untouched
    assert main(["shard", "--data", str(src), "--out", str(out), "--shard-size", "40", "--force"]) == 0
    assert len(shards.shard_files(out)) == 2
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        shard_writer.convert(src, out, shard_size=25, force=True)
    assert (out / "notes.txt").read_text() == "mine"


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(value: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_foreign_shards_json_labels_a_class_map_and_bad_samples_skipped_and_counted(tmp_path):
    jpg = _png(200, "JPEG")
    _tar(
        tmp_path / "a.tar",
        [
            ("x/one.png", _png(10)),
            ("x/one.json", json.dumps({"label": 1}).encode()),
            ("two.jpg", jpg),
            ("two.cls", b"cat"),
            ("broken.jpg", jpg[: len(jpg) // 2]),  # truncated: found when the stream decodes it
            ("broken.cls", b"0"),
            ("nolabel.png", _png(30)),
            ("orphan.cls", b"1"),
        ],
    )
    _tar(tmp_path / "b.tar", [("three.webp", _png(90, "WEBP")), ("three.cls", b"dog"), ("four.png", _png(5))])
    (tmp_path / "index_to_name.json").write_text(json.dumps({"0": "cat", "1": "dog"}))
    ch, stream = _stream(tmp_path)
    assert ch.format == "webdataset" and ch.classes == ["cat", "dog"]
    assert sorted((key, ch.classes[label]) for key, label in ch.samples) == [
        ("a.tar/broken", "cat"),
        ("a.tar/two", "cat"),
        ("a.tar/x/one", "dog"),
        ("b.tar/three", "dog"),
    ]
    assert Counter(ch.skipped) == {"missing label": 2, "label without image": 1}
    items = list(stream)
    assert len(items) == 4 and items.count(None) == 1 and stream.bad == 1


def _pixels_by_key(root: Path) -> dict[str, str]:
    """shard/KEY -> pixel hash of every image in a channel's shards, read from the tars directly."""
    found = {}
    for shard in sorted(root.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png"):
                    image = Image.open(io.BytesIO(tar.extractfile(member).read()))
                    found[f"{shard.name}/{member.name.partition('.')[0]}"] = _pixels(image)
    return found


def test_the_rank_split_gives_disjoint_sets_covering_everything(sample_data, tmp_path):
    assert shards.shards_for(list("abcdefg"), 1, 3) == ["b", "e"]
    src = _small_folder(sample_data, tmp_path / "src", per_class=10)
    shard_writer.convert(src, tmp_path / "out", shard_size=14)  # 100 images, 8 shards
    ch = channel_formats.load_channel(tmp_path / "out")
    pixels = _pixels_by_key(tmp_path / "out")
    seen = []
    for rank in range(3):
        _, stream = _stream(tmp_path / "out", rank, 3, shuffle=True)
        seen.append(Counter(digest for digest, _ in stream))
        assert sum(seen[-1].values()) == stream.sample_count() > 0
        # The keys a rank logs its epoch share by name exactly the images its stream yields.
        assert Counter(pixels[key] for key in stream.sample_keys()) == seen[-1]
    assert sum(seen, Counter()) == Counter(_pixels(open_rgb(p)) for p in sorted(src.rglob("*.png")))
    assert all(not (seen[i].keys() & seen[j].keys()) for i in range(3) for j in range(i + 1, 3))
    with pytest.raises(UserError, match="8 shard"):
        _stream(tmp_path / "out", 0, 9)
    # Workers split a process's shards again; the batch count is known ahead (DDP needs equal step counts).
    _, stream = _stream(tmp_path / "out", 0, 2)
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2, collate_fn=lambda b: b)
    batches = list(loader)
    assert len(batches) == stream.batches(4, 2) and sum(map(len, batches)) == stream.sample_count() == 56
    assert len(ch.samples) == 100


def test_the_shuffle_is_deterministic_by_seed_and_changes_every_pass(sample_data, tmp_path):
    src = _small_folder(sample_data, tmp_path / "src", per_class=10)
    shard_writer.convert(src, tmp_path / "out", shard_size=30)
    order = lambda stream: [digest for digest, _ in stream]  # noqa: E731
    _, first = _stream(tmp_path / "out", seed=1, shuffle=True)
    _, again = _stream(tmp_path / "out", seed=1, shuffle=True)
    _, other = _stream(tmp_path / "out", seed=2, shuffle=True)
    one = order(first)
    assert one == order(again) and one != order(other) and sorted(one) == sorted(order(other))
    assert order(first) != one  # the second pass (epoch) shuffles differently
