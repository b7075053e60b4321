"""Imbalanced-class metrics against hand-computed values (scikit-learn's definitions), and the confusion PNG."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from imgclf import evaluation
from imgclf.metrics import METRIC_DEFINITIONS, format_line

pytestmark = pytest.mark.unit


def _one_hot(predicted, k):
    probs = np.full((len(predicted), k), 0.1 / (k - 1))
    probs[np.arange(len(predicted)), predicted] = 0.9
    return probs


def test_per_class_precision_recall_f1_balanced_accuracy_and_macro_f1():
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    predicted = [0, 0, 0, 1, 1, 0, 2, 2]
    rep = evaluation.report(labels, _one_hot(predicted, 3), ["a", "b", "c"])
    assert rep["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert rep["accuracy"] == pytest.approx(6 / 8)
    # recall a 3/4, b 1/2, c 1 -> balanced accuracy 0.75; precision a 3/4, b 1/2, c 1 -> f1 equal to those.
    assert rep["per_class"]["a"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert rep["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert rep["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1) / 3)
    assert rep["macro_f1"] == pytest.approx((0.75 + 0.5 + 1) / 3)


def test_majority_class_predictor_scores_high_accuracy_but_chance_balanced_accuracy():
    labels = [0] * 95 + [1] * 5
    rep = evaluation.report(labels, _one_hot([0] * 100, 2), ["rest", "eight"])
    assert rep["accuracy"] == pytest.approx(0.95)
    assert rep["balanced_accuracy"] == pytest.approx(0.5)
    assert rep["per_class"]["eight"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5}


def test_binary_auc_is_the_mann_whitney_statistic_with_ties_halved():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5])
    # positive/negative pairs ranked correctly: (0.35>0.1) (0.8>all 3) (0.5>0.1,0.4, tie 0.5) = 1+3+2.5 of 9
    assert evaluation.binary_auc(labels == 1, scores) == pytest.approx(6.5 / 9)
    probs = np.stack([1 - scores, scores], 1)
    assert evaluation.report(labels, probs, ["n", "p"])["auc"] == pytest.approx(6.5 / 9)
    assert math.isnan(evaluation.binary_auc(np.array([True, True]), np.array([0.2, 0.3])))


def test_multiclass_auc_is_the_macro_one_vs_rest_mean():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.7 + 0.1
    assert evaluation.roc_auc(labels, probs) == pytest.approx(1.0)
    # Every class's score column taken from the next class: each one-vs-rest AUC is 2 ties of 8 pairs.
    assert evaluation.roc_auc(labels, np.roll(probs, -1, axis=1)) == pytest.approx(0.25)


def test_metric_lines_match_their_definitions():
    rep = evaluation.report([0, 1, 1], _one_hot([0, 1, 0], 2), ["x", "y"])
    line = format_line({"epoch": 2, "valid_loss": 0.5, "valid_accuracy": 0.6, **evaluation.metric_values("valid", rep)})
    by_name = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    assert len(METRIC_DEFINITIONS) <= 20
    assert float(re.search(by_name["valid_balanced_accuracy"], line).group(1)) == pytest.approx(0.75)
    assert float(re.search(by_name["valid_accuracy"], line).group(1)) == pytest.approx(0.6)
    assert re.findall(by_name["epoch"], line) == ["2"]
    assert re.search(by_name["valid_auc"], line) and re.search(by_name["valid_macro_f1"], line)


def test_evaluation_json_and_confusion_matrix_png_are_written(tmp_path):
    names = [str(d) for d in range(10)]
    labels = np.repeat(np.arange(10), 5)
    rep = evaluation.report(labels, _one_hot(labels, 10), names)
    evaluation.write(tmp_path, {"valid": rep, "test": rep}, names)
    saved = json.loads((tmp_path / evaluation.REPORT_FILE).read_text())
    assert saved["classes"] == names and saved["test"]["balanced_accuracy"] == 1.0
    with Image.open(tmp_path / evaluation.CONFUSION_FILE) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 300
