"""`imgclf evaluate`'s evaluation.json: SageMaker's model-quality layout around imgclf.evaluation's report, and
the Processing contract's model resolution and errors (no torch model needed)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from imgclf import cli, evaluation
from imgclf.errors import UserError
from imgclf.model_evaluation import model_quality, write
from imgclf.processing_contract import EVALUATION_GROUP, GATE_METRICS, gate_json_path, resolve_model

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "fox"]


def _one_hot(predicted, k=3):
    probs = np.full((len(predicted), k), 0.1 / (k - 1))
    probs[np.arange(len(predicted)), predicted] = 0.9
    return probs


LABELS = [0, 0, 0, 0, 1, 1, 2, 2]
PREDICTED = [0, 0, 0, 1, 1, 0, 2, 2]


def test_layout_is_sagemaker_model_quality_with_value_and_standard_deviation_per_metric():
    doc = model_quality(LABELS, _one_hot(PREDICTED), CLASSES, bootstrap=50)
    group = doc[EVALUATION_GROUP]
    rep = evaluation.report(LABELS, _one_hot(PREDICTED), CLASSES)  # the one metrics implementation
    assert group["accuracy"]["value"] == pytest.approx(rep["accuracy"])
    assert group["balanced_accuracy"]["value"] == pytest.approx(rep["balanced_accuracy"])
    assert group["macro_f1"]["value"] == pytest.approx(rep["macro_f1"])
    assert group["auc"]["value"] == pytest.approx(rep["auc"])
    # weighted = support-weighted mean of the per-class values (SageMaker's weighted_*)
    f1 = [m["f1"] for m in rep["per_class"].values()]
    assert group["weighted_f1"]["value"] == pytest.approx((4 * f1[0] + 2 * f1[1] + 2 * f1[2]) / 8)
    assert group["weighted_recall"]["value"] == pytest.approx(rep["accuracy"])
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "weighted_f1"):
        assert set(group[name]) == {"value", "standard_deviation"}
        assert group[name]["standard_deviation"] > 0
    # confusion_matrix: {true label: {predicted label: count}}, as Model Monitor writes it
    assert group["confusion_matrix"] == {
        "cat": {"cat": 3, "dog": 1, "fox": 0},
        "dog": {"cat": 1, "dog": 1, "fox": 0},
        "fox": {"cat": 0, "dog": 0, "fox": 2},
    }
    assert doc["dataset"] == {"item_count": 8}
    assert doc["classes"] == CLASSES and doc["report"]["per_class"] == rep["per_class"]


def test_no_bootstrap_leaves_standard_deviations_null_and_a_single_class_set_has_no_auc():
    doc = model_quality([1, 1, 1], _one_hot([1, 1, 0]), CLASSES, bootstrap=0)
    group = doc[EVALUATION_GROUP]
    assert group["accuracy"] == {"value": pytest.approx(2 / 3), "standard_deviation": None}
    assert "auc" not in group  # undefined with one class present


def test_bootstrap_is_reproducible():
    a = model_quality(LABELS, _one_hot(PREDICTED), CLASSES, bootstrap=30, seed=1)
    b = model_quality(LABELS, _one_hot(PREDICTED), CLASSES, bootstrap=30, seed=1)
    assert a == b


def test_every_gate_metric_has_its_json_path_in_the_document():
    doc = model_quality(LABELS, _one_hot(PREDICTED), CLASSES, bootstrap=0)
    for metric in GATE_METRICS:
        node = doc
        for key in gate_json_path(metric).split("."):
            node = node[key]
        assert isinstance(node, float)
    with pytest.raises(UserError, match="gate metric"):
        gate_json_path("loss")


def test_write_puts_evaluation_json_and_the_confusion_png_in_out(tmp_path):
    doc = model_quality(LABELS, _one_hot(PREDICTED), CLASSES, bootstrap=0)
    path = write(tmp_path / "out", doc)
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))
    assert path.name == "evaluation.json" and (tmp_path / "out" / "confusion_matrix.png").is_file()


def _model_dir(root):
    root.mkdir(parents=True)
    (root / "imgclf.json").write_text("{}")
    (root / "model.pt").write_bytes(b"x")
    return root


def _tar(model_dir, tar_path):
    with tarfile.open(tar_path, "w:gz") as t:
        for f in model_dir.iterdir():
            t.add(f, arcname=f.name)
    return tar_path


def test_resolve_model_takes_a_directory_a_tarball_or_the_mounted_folder_holding_model_tar_gz(tmp_path):
    model = _model_dir(tmp_path / "model")
    assert resolve_model(model, tmp_path / "s0") == model
    tar = _tar(model, tmp_path / "model.tar.gz")
    assert (resolve_model(tar, tmp_path / "s1") / "imgclf.json").is_file()
    mounted = tmp_path / "mounted"  # what S3Prefix download of the training job's output leaves
    mounted.mkdir()
    _tar(model, mounted / "model.tar.gz")
    _tar(model, mounted / "output.tar.gz")
    assert (resolve_model(mounted, tmp_path / "s2") / "model.pt").is_file()


def test_resolve_model_errors_say_what_was_found(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(tmp_path / "missing", tmp_path / "s")
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="neither a model directory.*found: train"):
        resolve_model(tmp_path / "data", tmp_path / "s")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="not a readable model.tar.gz"):
        resolve_model(tmp_path / "junk.tar.gz", tmp_path / "s")
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("x")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as t:
        t.add(other / "readme.txt", arcname="readme.txt")
    with pytest.raises(UserError, match="not an imgclf model.tar.gz"):
        resolve_model(tmp_path / "other.tar.gz", tmp_path / "s3")


def test_cli_evaluate_exits_2_with_the_reason_on_bad_input(tmp_path, capsys):
    rc = cli.main(["evaluate", "--model", str(tmp_path / "none"), "--data", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2
    assert "--model" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert rc == 2
    assert "--data" in capsys.readouterr().err


def test_cli_evaluate_defaults_are_the_processing_contract():
    args = cli.build_parser(["evaluate"]).parse_args(["evaluate"])
    assert (args.model, args.data, args.out) == (
        "/opt/ml/processing/input/model",
        "/opt/ml/processing/input/test",
        "/opt/ml/processing/output",
    )


def test_archive_members_that_leave_the_target_are_refused_on_pythons_without_tar_filters(tmp_path):
    from imgclf.processing_contract import _safe_members

    tar = tmp_path / "evil.tar.gz"
    (tmp_path / "x").write_text("x")
    with tarfile.open(tar, "w:gz") as t:
        t.add(tmp_path / "x", arcname="../escape")
    with tarfile.open(tar) as t, pytest.raises(UserError, match="refusing the archive member"):
        _safe_members(t, tar)
