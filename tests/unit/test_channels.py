import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from imgclf import data
from imgclf.errors import UserError
from imgclf.model import ModelMeta

pytestmark = pytest.mark.unit


def test_sample_data_is_stratified_and_deterministic(tmp_path):
    counts_a = data.write_sample_data(tmp_path / "a")
    data.write_sample_data(tmp_path / "b")
    assert counts_a == {"train": 1259, "valid": 269, "test": 269}
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b
    for split in ("train", "valid", "test"):
        per_class = Counter(p.parent.name for p in (tmp_path / "a" / split).rglob("*.png"))
        assert sorted(per_class) == [str(d) for d in range(10)]
        assert max(per_class.values()) - min(per_class.values()) <= 0.2 * max(per_class.values())


def _bad_files(folder):
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = next(p for p in folder.iterdir() if p.suffix == ".png" and p.stat().st_size > 0)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:40])


def test_unreadable_files_are_skipped_and_counted(sample_data, tmp_path, caplog):
    train = tmp_path / "train"
    shutil.copytree(sample_data / "train", train)
    _bad_files(train / "3")
    channel = data.scan_image_folder(train)
    assert len(channel.skipped) == 3
    assert len(channel.samples) == 1259
    assert "skipped 3 unreadable file(s)" in caplog.text


def test_class_folder_with_only_bad_files_is_a_clear_error(sample_data, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(sample_data / "train", train)
    bad = train / "broken"
    bad.mkdir()
    (bad / "a.jpg").write_text("nope")
    with pytest.raises(UserError, match="no readable image.*broken"):
        data.scan_image_folder(train)


def test_missing_or_empty_channel_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        data.scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        data.scan_image_folder(tmp_path / "empty")


def test_valid_classes_must_be_train_classes(sample_data, tmp_path):
    valid = tmp_path / "valid"
    shutil.copytree(sample_data / "valid", valid)
    (valid / "cat").mkdir()
    shutil.copy(next((valid / "1").iterdir()), valid / "cat" / "x.png")
    with pytest.raises(UserError, match="not in train: cat"):
        data.scan_image_folder(valid, [str(d) for d in range(10)], channel="valid")


def test_stratified_split_keeps_every_class_on_both_sides():
    samples = [(f"{c}-{i}", c) for c in range(3) for i in range(10)]
    kept, held = data.stratified_split(samples, 0.2, seed=1)
    assert Counter(label for _, label in held) == {0: 2, 1: 2, 2: 2}
    assert not set(kept) & set(held) and len(kept) + len(held) == 30


@pytest.mark.parametrize(
    "mode, array",
    [
        ("L", np.full((20, 30), 200, np.uint8)),
        ("I;16", np.full((20, 30), 50000, np.uint16)),
        ("CMYK", np.zeros((20, 30, 4), np.uint8)),
        ("P", np.zeros((20, 30), np.uint8)),
    ],
)
def test_any_pil_mode_becomes_a_normalised_rgb_tensor(tmp_path, mode, array):
    path = tmp_path / f"img.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.fromarray(array).convert(mode).save(path) if mode in ("CMYK", "P") else Image.fromarray(array).save(path)
    meta = ModelMeta.for_training("resnet18", 10, 32)
    tensor = data.eval_transform(meta)(data.open_rgb(str(path)))
    assert tensor.shape == (3, 32, 32)
