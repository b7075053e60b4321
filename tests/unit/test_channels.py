import shutil
from collections import Counter
from pathlib import Path

import pytest

from imgclf import channels
from imgclf.errors import UserError

pytestmark = pytest.mark.unit


def _bad_files(folder):
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = next(p for p in folder.iterdir() if p.suffix == ".png" and p.stat().st_size > 0)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:40])


def test_unreadable_files_are_skipped_and_counted(sample_data, tmp_path, caplog):
    train = tmp_path / "train"
    shutil.copytree(sample_data / "train", train)
    _bad_files(train / "3")
    channel = channels.scan_image_folder(train)
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
        channels.scan_image_folder(train)


def test_missing_or_empty_channel_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        channels.scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        channels.scan_image_folder(tmp_path / "empty")


def test_valid_classes_must_be_train_classes(sample_data, tmp_path):
    valid = tmp_path / "valid"
    shutil.copytree(sample_data / "valid", valid)
    (valid / "cat").mkdir()
    shutil.copy(next((valid / "1").iterdir()), valid / "cat" / "x.png")
    with pytest.raises(UserError, match="not in train: cat"):
        channels.scan_image_folder(valid, [str(d) for d in range(10)], channel="valid")


def test_stratified_split_keeps_every_class_on_both_sides():
    samples = [(f"{c}-{i}", c) for c in range(3) for i in range(10)]
    kept, held = channels.stratified_split(samples, 0.2, seed=1)
    assert Counter(label for _, label in held) == {0: 2, 1: 2, 2: 2}
    assert not set(kept) & set(held) and len(kept) + len(held) == 30


def test_data_with_channel_folders_or_as_the_train_channel_and_explicit_channels_win(sample_data, tmp_path):
    paths = channels.resolve_channels(sample_data)
    assert paths == channels.ChannelPaths(sample_data / "train", sample_data / "valid", sample_data / "test")
    assert channels.resolve_channels(sample_data / "train") == channels.ChannelPaths(sample_data / "train")
    own_valid = tmp_path / "v"
    assert channels.resolve_channels(sample_data, valid=own_valid).valid == own_valid
    assert channels.resolve_channels(None, train=own_valid) == channels.ChannelPaths(own_valid)
    assert channels.resolve_channels(None) is None
    with pytest.raises(UserError, match="not a directory"):
        channels.resolve_channels(tmp_path / "missing")


def test_sagemaker_channel_aliases_map_to_train_valid_test_and_others_are_ignored(caplog):
    named = {"training": "/a", "validation": "/b", "testing": "/c", "extra": "/d"}
    assert channels.canonical_channels(named) == {"train": Path("/a"), "valid": Path("/b"), "test": Path("/c")}
    assert "Ignoring unknown channel 'extra'" in caplog.text
