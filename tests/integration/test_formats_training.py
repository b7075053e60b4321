"""Training on every channel format through sagemaker-training's real `train` program, and class weighting on
an imbalanced HDF5 fixture (one digit against the rest at 1:20, the shape of seed 004's ISIC data).

Small on purpose (32 px, a few hundred images, 2 epochs): these prove the formats and metrics end to end, not accuracy.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from support.training import FAST_HYPERPARAMETERS, make_opt_ml, sagemaker_train
from unit.test_channel_formats import write_hdf5_channel, write_manifest_channel

from imgclf.artifact import load_artifact
from imgclf.hyperparameters import Hyperparameters
from imgclf.metrics import METRIC_DEFINITIONS
from imgclf.training import RunConfig, fit

pytestmark = pytest.mark.integration

QUICK = {**FAST_HYPERPARAMETERS, "epochs": "2", "batch-size": "16"}


def _run(base: Path) -> str:
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    assert not (base / "output" / "failure").exists()
    return out


def _metric(out: str, name: str) -> list[float]:
    regex = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == name)
    return [float(v) for v in re.findall(regex, out)]


def test_hdf5_channels_with_an_isic_style_labels_csv_train_on_a_stratified_sample(sample_data, tmp_path):
    train = tmp_path / "h5-train"
    write_hdf5_channel(sample_data / "train", train, per_class=30, encodings=("bytes", "uint8"))
    with h5py.File(train / "images.hdf5", "a") as h5:
        h5["ISIC_corrupt"] = np.void(b"\xff\xd8\xff\xe0 truncated jpeg")
    with open(train / "metadata.csv", "a", newline="") as f:
        csv.writer(f).writerows([("ISIC_corrupt", "3", 1), ("ISIC_not_in_file", "3", 1)])
    test = tmp_path / "h5-test"
    write_hdf5_channel(sample_data / "test", test, per_class=8)
    hps = {**QUICK, "id-column": "isic_id", "label-column": "target", "sample": "0.9", "valid-fraction": "0.15"}
    base = make_opt_ml(tmp_path / "ml", {"train": train, "test": test}, hps)
    out = _run(base)
    # 302 rows, sampled to 272 (30 of 3's 32 rows drawn with the rest, proportions kept) before the images are
    # checked: whichever bad rows were drawn are skipped and counted by reason.
    skipped = re.search(r"train channel \(hdf5\): skipped (\d+) row\(s\) \(([^)]*)\), kept (\d+)", out)
    assert skipped, out[-3000:]
    assert int(skipped.group(1)) + int(skipped.group(3)) == 272
    for definition in METRIC_DEFINITIONS:
        assert re.findall(definition["Regex"], out), f"{definition['Name']} not in the log"
    train_loss = _metric(out, "train_loss")
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0]  # it learns; accuracy needs more than 2 epochs
    report = json.loads((base / "model" / "evaluation.json").read_text())
    assert report["classes"] == [str(d) for d in range(10)] and report["test"]["count"] == 80
    # No valid channel: valid-fraction held out of the sample with the same stratified function (every class).
    assert 35 <= report["valid"]["count"] <= 45
    assert all(m["support"] >= 1 for m in report["valid"]["per_class"].values())
    assert report["test"]["balanced_accuracy"] == pytest.approx(_metric(out, "test_balanced_accuracy")[0], abs=1e-4)
    assert (base / "model" / "confusion_matrix.png").stat().st_size > 1000


def test_csv_and_jsonl_manifests_and_an_imagefolder_train_together(sample_data, tmp_path):
    train, valid = tmp_path / "csv-train", tmp_path / "jsonl-valid"
    write_manifest_channel(sample_data / "train", train, "csv", per_class=25, label_column="digit")
    write_manifest_channel(sample_data / "valid", valid, "jsonl", per_class=5, label_column="digit")
    with open(train / "manifest.csv", "a") as f:
        f.write("images/4/gone.png,4\nimages/4/x.png,\n")
    hps = {**QUICK, "label-column": "digit"}
    base = make_opt_ml(tmp_path / "ml", {"train": train, "valid": valid, "test": sample_data / "test"}, hps)
    out = _run(base)
    assert re.search(
        r"train channel \(manifest\): skipped 2 row\(s\) \(1 missing image, 1 unknown label\), kept 250 image", out
    ), out[-3000:]
    report = json.loads((base / "model" / "evaluation.json").read_text())
    assert (report["valid"]["count"], report["test"]["count"]) == (50, 269)
    assert len(_metric(out, "valid_balanced_accuracy")) == 2 and len(_metric(out, "valid_auc")) == 2
    assert _metric(out, "train_loss")[1] < _metric(out, "train_loss")[0]
    artifact = load_artifact(base / "model")
    assert artifact.index_to_name == {d: str(d) for d in range(10)}


def _imbalanced_channel(src: Path, dst: Path) -> None:
    """'1' = the digit 8, '0' = every other digit, at 1:20 (ISIC's target column, binary and rare)."""
    rest = sum(1 for p in src.rglob("*.png") if p.parent.name != "8")
    write_hdf5_channel(src, dst, per_class={"8": round(rest / 20)}, label_of=lambda name: str(int(name == "8")))


def test_class_weights_raise_balanced_accuracy_on_one_digit_against_the_rest(sample_data, tmp_path):
    channels = {split: tmp_path / split for split in ("train", "valid", "test")}
    for split, path in channels.items():
        _imbalanced_channel(sample_data / split, path)
    cfg = dict(train_dir=channels["train"], valid_dir=channels["valid"], test_dir=channels["test"])
    # Frozen random-init backbone, head trained on cached features: a weak learner, where the imbalance shows.
    base = {
        **FAST_HYPERPARAMETERS,
        "train-backbone": "false",
        "epochs": "10",
        "lr": "0.01",
        "patience": "0",
        "id-column": "isic_id",
        "label-column": "target",
    }
    features: dict = {}  # the backbone runs once for both trainings
    results = {}
    runs = {
        "none": {"class-weights": "none"},
        "auto": {"class-weights": "auto"},
        "sampler": {"balanced-sampler": "true"},
    }
    for name, extra in runs.items():
        hp = Hyperparameters.from_mapping({**base, **extra})
        results[name] = fit(hp, RunConfig(model_dir=tmp_path / name, **cfg), feature_cache=features)
    for name, r in results.items():
        print(f"{name}: test balanced accuracy {r['test_balanced_accuracy']:.4f} (accuracy {r['test_accuracy']:.4f})")
    plain, weighted = results["none"], results["auto"]
    assert weighted["test_balanced_accuracy"] >= plain["test_balanced_accuracy"] + 0.05
    assert results["sampler"]["test_balanced_accuracy"] >= plain["test_balanced_accuracy"] + 0.05
    assert weighted["valid_balanced_accuracy"] > plain["valid_balanced_accuracy"]
    rare = json.loads((tmp_path / "auto" / "evaluation.json").read_text())["test"]["per_class"]["1"]
    assert rare["support"] == 12 and rare["recall"] > 0.5
    assert 0 < weighted["test_auc"] <= 1
