"""Channel readers on lazily fetched files (SageMaker FastFile): filesystem calls counted per path, not timed.

An ImageFolder scan lists each class folder once (a second walk fails here) and stats no image; with FastFile
(`check_images=False`) it opens no image either, and one epoch opens each image exactly once and lists nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from support.fs_calls import count_fs_calls
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from imgclf.channel_formats import FormatOptions, load_channel
from imgclf.training.loaders import ImageDataset, collate_skip_bad

pytestmark = pytest.mark.unit


def _image_folder(root: Path, classes: int = 3, per_class: int = 6) -> list[str]:
    paths = []
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            path = root / f"c{c}" / f"{i}.png"
            Image.new("RGB", (8, 8), (c * 40, i * 20, 0)).save(path)
            paths.append(str(path))
    return paths


def test_an_image_folder_scan_lists_each_folder_once_and_stats_no_image(tmp_path, monkeypatch):
    images = _image_folder(tmp_path)
    with count_fs_calls(monkeypatch) as calls:
        channel = load_channel(tmp_path)
    assert sorted(key for key, _ in channel.samples) == sorted(images)
    class_dirs = sorted({str(Path(p).parent) for p in images})
    assert [calls.listings[d] for d in class_dirs] == [1] * len(class_dirs), calls.listings
    # The root: format detection and the class list, a number of calls that does not grow with the images.
    assert calls.listings[str(tmp_path)] <= 3
    assert sum(calls.listings.values()) == len(class_dirs) + calls.listings[str(tmp_path)]
    assert not any(calls.stats[p] for p in images), calls.stats
    assert [calls.opens[p] for p in images] == [1] * len(images)  # the decode check (File mode)


def test_with_fastfile_the_scan_opens_no_image_and_an_epoch_opens_each_once(tmp_path, monkeypatch):
    images = _image_folder(tmp_path)
    with count_fs_calls(monkeypatch) as calls:
        channel = load_channel(tmp_path, FormatOptions(check_images=False))
    assert len(channel.samples) == len(images)
    assert not any(calls.opens[p] or calls.stats[p] for p in images)

    loader = DataLoader(ImageDataset(channel.samples, pil_to_tensor), batch_size=4, collate_fn=collate_skip_bad)
    with count_fs_calls(monkeypatch) as calls:
        seen = sum(len(batch[1]) for batch in loader)
    assert seen == len(images)
    assert [calls.opens[p] for p in images] == [1] * len(images)
    assert not calls.listings and not any(calls.stats[p] for p in images)


def test_with_fastfile_a_bad_image_is_skipped_when_first_read(tmp_path, monkeypatch):
    images = _image_folder(tmp_path, classes=2, per_class=3)
    Path(images[0]).write_bytes(b"not an image")
    channel = load_channel(tmp_path, FormatOptions(check_images=False))
    loader = DataLoader(ImageDataset(channel.samples, pil_to_tensor), batch_size=8, collate_fn=collate_skip_bad)
    assert sum(len(batch[1]) for batch in loader) == len(images) - 1
