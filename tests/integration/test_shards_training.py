"""Training on tar shards made by `imgclf shard` from a slice of the embedded sample, against the same run on the
ImageFolder it came from: fine-tuned (images streamed every epoch) and on cached features (one pass over the
stream, DataLoader workers splitting the shards). A foreign shard with a truncated JPEG and an unlabelled image rides
along: both skipped and counted, training goes on.

Small on purpose (32 px, 200 train images, 3 epochs): "within noise" is 0.15 of accuracy on 100 test images.
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.training import FAST_HYPERPARAMETERS

from imgclf import model_evaluation
from imgclf.cli import main
from imgclf.hyperparameters import Hyperparameters
from imgclf.training import RunConfig, fit

pytestmark = pytest.mark.integration

PER_CLASS = {"train": 20, "valid": 10, "test": 10}


def _slice(sample_data: Path, dst: Path) -> Path:
    for split, n in PER_CLASS.items():
        for class_dir in sorted((sample_data / split).iterdir()):
            (dst / split / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.glob("*.png"))[:n]:
                shutil.copy(f, dst / split / class_dir.name / f.name)
    return dst


def _bad_shard(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(buf, "JPEG")
    members = [("broken.jpg", buf.getvalue()[:40]), ("broken.cls", b"3"), ("nolabel.png", buf.getvalue())]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _fit(data: Path, out: Path, **extra) -> dict:
    hp = Hyperparameters.from_mapping({**FAST_HYPERPARAMETERS, "epochs": "3", "batch-size": "8", **extra})
    return fit(hp, RunConfig(train_dir=data / "train", valid_dir=data / "valid", test_dir=data / "test", model_dir=out))


def test_training_on_shards_matches_imagefolder_and_skips_bad_samples(sample_data, tmp_path, caplog):
    folder = _slice(sample_data, tmp_path / "folder")
    sharded = tmp_path / "shards"
    assert main(["shard", "--data", str(folder), "--out", str(sharded), "--shard-size", "50"]) == 0
    _bad_shard(sharded / "train" / "zz-foreign.tar")
    with caplog.at_level(logging.INFO):
        on_shards = _fit(sharded, tmp_path / "m-shards", **{"num-workers": "0"})  # workers' logs miss caplog
    on_folder = _fit(folder, tmp_path / "m-folder", **{"num-workers": "0"})
    log = caplog.text
    assert "train channel (webdataset): skipped 1 row(s) (1 missing label), kept 201 image(s)" in log
    assert "Skipping zz-foreign.tar/broken.jpg" in log
    print(f"test accuracy: shards {on_shards['test_accuracy']:.4f}, imagefolder {on_folder['test_accuracy']:.4f}")
    assert on_folder["test_accuracy"] > 0.5
    assert abs(on_shards["test_accuracy"] - on_folder["test_accuracy"]) <= 0.15
    # `imgclf evaluate` reads a shard test channel too, and scores the model as training's test pass did.
    labels, probs, _ = model_evaluation.predict(tmp_path / "m-shards", sharded / "test")
    assert len(labels) == 100
    assert (probs.argmax(1) == labels).mean() == pytest.approx(on_shards["test_accuracy"], abs=0.02)


def test_cached_feature_training_reads_the_shards_once(sample_data, tmp_path, caplog):
    folder = _slice(sample_data, tmp_path / "folder")
    sharded = tmp_path / "shards"
    assert main(["shard", "--data", str(folder), "--out", str(sharded), "--shard-size", "50"]) == 0
    cached = {"train-backbone": "false", "epochs": "3", "lr": "0.01", "num-workers": "0"}
    with caplog.at_level(logging.INFO):
        on_shards = _fit(sharded, tmp_path / "m-shards", **{**cached, "num-workers": "2"})  # workers split shards
    assert "cached features" in caplog.text
    on_folder = _fit(folder, tmp_path / "m-folder", **cached)
    # Same features (eval transform, frozen backbone), only their order differs: the head lands close.
    assert abs(on_shards["test_accuracy"] - on_folder["test_accuracy"]) <= 0.1
    assert on_shards["test_accuracy"] > 0.2  # above chance (0.1)
