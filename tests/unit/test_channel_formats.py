"""Channel formats on small real fixtures built from the embedded digits: HDF5 (+ CSV), CSV and JSON Lines
manifests, detection, bad rows skipped and counted, stratified sampling, lazy per-worker HDF5 reads.

The fixture writers here use h5py / csv / json directly (not imgclf) and are shared with the integration tier.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from imgclf import channel_formats, channels
from imgclf.artifact import ModelMeta
from imgclf.channel_formats import FormatOptions
from imgclf.errors import UserError
from imgclf.images import eval_transform, open_rgb
from imgclf.training.loaders import ImageDataset, collate_skip_bad

pytestmark = pytest.mark.unit


def _images(folder: Path, per_class: int | dict[str, int] | None = None) -> list[tuple[Path, str]]:
    """(png path, class name) of an ImageFolder channel, optionally the first `per_class` of each class (a dict:
    per class name, the others all)."""
    out = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.png"))
        limit = per_class.get(class_dir.name) if isinstance(per_class, dict) else per_class
        out += [(f, class_dir.name) for f in files[:limit]]
    return out


def write_hdf5_channel(
    src: Path,
    dst: Path,
    per_class: int | dict[str, int] | None = None,
    id_column: str = "isic_id",
    label_column: str = "target",
    label_of=lambda name: name,
    encodings: tuple[str, ...] = ("bytes",),
) -> list[tuple[str, str]]:
    """ISIC-2024 style: images.hdf5 (dataset per id) + metadata.csv (id, label, another column).

    encodings cycle per image: 'bytes' (scalar opaque PNG bytes, as ISIC's file), 'uint8' (1-D array of the
    encoded bytes), 'pixels' (H,W,3 uint8 array). Returns the (id, label) rows written."""
    dst.mkdir(parents=True, exist_ok=True)
    rows = []
    with h5py.File(dst / "images.hdf5", "w") as h5:
        for i, (path, name) in enumerate(_images(src, per_class)):
            image_id = f"ISIC_{i:07d}"
            encoding = encodings[i % len(encodings)]
            png = path.read_bytes()
            if encoding == "bytes":
                h5[image_id] = np.void(png)
            elif encoding == "uint8":
                h5[image_id] = np.frombuffer(png, dtype=np.uint8)
            else:
                h5[image_id] = np.asarray(Image.open(path).convert("RGB"))
            rows.append((image_id, label_of(name)))
    with open(dst / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([id_column, label_column, "age_approx"])
        writer.writerows((i, label, 50) for i, label in rows)
    return rows


def write_manifest_channel(
    src: Path,
    dst: Path,
    kind: str,
    per_class: int | None = None,
    label_column: str = "label",
    class_name=lambda name: name,
) -> int:
    """Images copied under dst/images/<class>/ and a manifest listing them: kind 'csv' (path,<label_column>) or
    'jsonl' (SageMaker Ground Truth shape: source-ref s3:// URI, class index, <label>-metadata.class-name)."""
    items = _images(src, per_class)
    for path, name in items:
        (dst / "images" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst / "images" / name / path.name)
    if kind == "csv":
        with open(dst / "manifest.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", label_column])
            writer.writerows((f"images/{name}/{path.name}", class_name(name)) for path, name in items)
    else:
        with open(dst / "train.manifest.jsonl", "w") as f:
            for path, name in items:
                row = {
                    "source-ref": f"s3://bucket/jobs/digits/images/{name}/{path.name}",
                    label_column: int(name),
                    f"{label_column}-metadata": {
                        "class-name": class_name(name),
                        "type": "groundtruth/image-classification",
                    },
                }
                f.write(json.dumps(row) + "\n")
    return len(items)


def _tensor(channel: channels.Channel, i: int) -> torch.Tensor:
    meta = ModelMeta.for_training("resnet18", len(channel.classes), 32)
    ds = ImageDataset(channel.samples, eval_transform(meta), channel.reader)
    return ds[i][0]


def test_hdf5_channel_reads_bytes_and_arrays_and_counts_bad_rows(sample_data, tmp_path):
    rows = write_hdf5_channel(sample_data / "valid", tmp_path, per_class=6, encodings=("bytes", "uint8", "pixels"))
    with h5py.File(tmp_path / "images.hdf5", "a") as h5:
        h5["ISIC_bad"] = np.void(b"\x89PNG garbage")
    with open(tmp_path / "metadata.csv", "a", newline="") as f:
        csv.writer(f).writerows([("ISIC_bad", "3", 1), ("ISIC_missing", "4", 1), ("ISIC_0000000", "", 1)])
    opts = FormatOptions(id_column="isic_id", label_column="target")
    channel = channel_formats.load_channel(tmp_path, opts)
    assert channel.format == "hdf5" and channel.classes == [str(d) for d in range(10)]
    assert len(channel.samples) == len(rows) == 60
    assert Counter(channel.skipped) == {"undecodable image": 1, "missing image": 1, "unknown label": 1}
    # Same pixels whichever way the PNG was stored, and the same as the PNG file itself.
    for i in range(3):
        original = eval_transform(ModelMeta.for_training("resnet18", 10, 32))(
            open_rgb(str(sorted((sample_data / "valid" / "0").glob("*.png"))[i]))
        )
        assert torch.allclose(_tensor(channel, i), original)


def test_hdf5_reader_opens_its_own_file_in_each_dataloader_worker(sample_data, tmp_path):
    write_hdf5_channel(sample_data / "valid", tmp_path, per_class=4)
    channel = channel_formats.load_channel(tmp_path, FormatOptions(id_column="isic_id", label_column="target"))
    reader = pickle.loads(pickle.dumps(channel.reader))  # what a spawned worker receives: the path only
    assert reader._file is None
    meta = ModelMeta.for_training("resnet18", 10, 32)
    ds = ImageDataset(channel.samples, eval_transform(meta), channel.reader)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_skip_bad)
    batches = list(loader)
    assert sum(len(b[1]) for b in batches) == 40
    assert channel.reader._file is None  # the parent never opened it: nothing shared across the fork


def test_missing_columns_name_the_hyperparameter_to_set(sample_data, tmp_path):
    write_hdf5_channel(sample_data / "valid", tmp_path, per_class=2)
    with pytest.raises(UserError, match=r"no column 'id' \(set the id-column hyperparameter\).*isic_id"):
        channel_formats.load_channel(tmp_path)


def test_a_channel_with_no_usable_rows_is_a_clear_error(sample_data, tmp_path):
    (tmp_path / "images.h5").write_bytes(b"")
    with h5py.File(tmp_path / "images.h5", "w") as h5:
        h5["a"] = np.void(b"not an image")
    (tmp_path / "labels.csv").write_text("id,label\na,cat\nb,dog\n")
    with pytest.raises(UserError, match=r"no usable images \(1 missing image, 1 undecodable image\)"):
        channel_formats.load_channel(tmp_path)


def test_manifest_and_labels_file_paths_stay_inside_their_channel(sample_data, tmp_path):
    """Issue 12: absolute paths, .. and symlinks out of the channel are skipped and counted, never read."""
    channel_dir = tmp_path / "channel"
    n = write_manifest_channel(sample_data / "valid", channel_dir, "csv", per_class=3)
    outside = tmp_path / "outside.png"
    shutil.copy(next((channel_dir / "images" / "1").iterdir()), outside)
    (channel_dir / "images" / "escape.png").symlink_to(outside)
    with open(channel_dir / "manifest.csv", "a") as f:
        f.write(f"{outside},1\n../outside.png,1\nimages/../../outside.png,1\nimages/escape.png,1\n")
        f.write("s3://bucket/prefix/../../outside.png,1\n")
    channel = channel_formats.load_channel(channel_dir)
    assert len(channel.samples) == n
    assert Counter(channel.skipped) == {"path outside the channel": 5}
    assert all(Path(path).resolve().is_relative_to(channel_dir.resolve()) for path, _ in channel.samples)
    with pytest.raises(UserError, match="outside the train channel"):
        channel_formats.load_channel(channel_dir, FormatOptions(labels_file="../outside.png"))


def test_csv_manifest_with_relative_paths(sample_data, tmp_path):
    n = write_manifest_channel(sample_data / "valid", tmp_path, "csv", per_class=3)
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write("images/3/not-there.png,3\nimages/0/,0\n")
    (tmp_path / "images" / "5" / "broken.png").write_bytes(b"\x89PNG\r\n")
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write("images/5/broken.png,5\n")
    channel = channel_formats.load_channel(tmp_path)
    assert channel.format == "manifest" and len(channel.samples) == n == 30
    assert Counter(channel.skipped) == {"missing image": 2, "undecodable image": 1}
    assert _tensor(channel, 0).shape == (3, 32, 32)


def test_sagemaker_jsonl_manifest_resolves_s3_uris_and_class_names(sample_data, tmp_path):
    write_manifest_channel(
        sample_data / "valid", tmp_path, "jsonl", per_class=2, label_column="class", class_name=lambda n: f"digit-{n}"
    )
    channel = channel_formats.load_channel(tmp_path, FormatOptions(label_column="class"))
    assert channel.classes == [f"digit-{d}" for d in range(10)]
    assert len(channel.samples) == 20 and not channel.skipped
    # valid/test: a label train does not know is skipped and counted.
    valid = channel_formats.load_channel(tmp_path, FormatOptions(label_column="class"), classes=["digit-1", "digit-2"])
    assert len(valid.samples) == 4 and Counter(valid.skipped) == {"unknown label": 16}


def test_format_detection_and_explicit_format(sample_data, tmp_path):
    assert channel_formats.detect_format(sample_data / "valid", FormatOptions()) == "imagefolder"
    write_manifest_channel(sample_data / "valid", tmp_path / "m", "csv", per_class=1)
    assert channel_formats.detect_format(tmp_path / "m", FormatOptions()) == "manifest"
    write_hdf5_channel(sample_data / "valid", tmp_path / "h", per_class=1)
    assert channel_formats.detect_format(tmp_path / "h", FormatOptions()) == "hdf5"
    with pytest.raises(UserError, match="needs exactly one .h5/.hdf5 file; found none"):
        channel_formats.load_channel(tmp_path / "m", FormatOptions(data_format="hdf5"))


def test_numeric_labels_sort_numerically():
    assert channel_formats.sort_labels({"10", "2", "1"}) == ["1", "2", "10"]
    assert channel_formats.sort_labels({"b", "a", "10"}) == ["10", "a", "b"]


def test_stratified_sample_keeps_label_proportions_and_is_deterministic():
    samples = [(f"neg-{i}", 0) for i in range(950)] + [(f"pos-{i}", 1) for i in range(50)]
    picked = channels.stratified_sample(samples, 100, seed=3)
    assert Counter(label for _, label in picked) == {0: 95, 1: 5}
    assert picked == channels.stratified_sample(samples, 100, seed=3)
    assert picked != channels.stratified_sample(samples, 100, seed=4)
    assert Counter(label for _, label in channels.stratified_sample(samples, 0.1, seed=0)) == {0: 95, 1: 5}
    assert channels.stratified_sample(samples, 0, seed=0) == samples
    # A rare class keeps at least one image.
    rare = [(f"n{i}", 0) for i in range(990)] + [(f"p{i}", 1) for i in range(10)]
    assert Counter(label for _, label in channels.stratified_sample(rare, 50, seed=0))[1] >= 1


def test_sample_draws_before_images_are_checked(sample_data, tmp_path):
    rows = write_hdf5_channel(sample_data / "train", tmp_path, per_class=30, encodings=("uint8",))
    opts = FormatOptions(id_column="isic_id", label_column="target")
    channel = channel_formats.load_channel(tmp_path, opts, sample=50, seed=1)
    assert len(rows) == 300 and len(channel.samples) == 50
    assert Counter(label for _, label in channel.samples) == {c: 5 for c in range(10)}


def test_decode_value_accepts_common_hdf5_layouts():
    rgb = np.zeros((8, 6, 3), np.uint8)
    rgb[..., 0] = 255
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    for value in (buf.getvalue(), np.void(buf.getvalue()), np.frombuffer(buf.getvalue(), np.uint8), rgb):
        assert np.array_equal(np.asarray(channel_formats.decode_value(value)), rgb)
    assert channel_formats.decode_value(np.moveaxis(rgb, -1, 0)).size == (6, 8)  # C,H,W
    assert channel_formats.decode_value(rgb[..., 0]).mode == "RGB"
    with pytest.raises(ValueError):
        channel_formats.decode_value(rgb.astype(np.float32))
