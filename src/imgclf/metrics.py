"""The metric lines the trainer prints and the SageMaker regexes that read them (tuner objective, console).

One line per epoch and one for the test set, `key=value` pairs so a regex per metric finds it:
    epoch=3 train_loss=0.4100 valid_loss=0.3900 valid_accuracy=0.9100 valid_balanced_accuracy=0.9000
        valid_macro_f1=0.9050 valid_auc=0.9800 epoch_seconds=12.3400
    test_loss=0.3800 test_accuracy=0.9200 test_balanced_accuracy=0.9100 test_macro_f1=0.9150 test_auc=0.9900

For imbalanced data tune on balanced accuracy, macro-F1 or AUC instead of accuracy (`imgclf.evaluation`): auc is
the positive class's ROC-AUC for two classes and the macro one-vs-rest ROC-AUC for more.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

EPOCH_METRICS = (
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "valid_balanced_accuracy",
    "valid_macro_f1",
    "valid_auc",
)
TEST_METRICS = ("test_loss", "test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_auc")

# SageMaker allows at most 20; names are what the tuner's objective_metric_name refers to.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "epoch", "Regex": rf"\bepoch={_NUMBER}"},
    *({"Name": m, "Regex": rf"\b{m}={_NUMBER}"} for m in EPOCH_METRICS + TEST_METRICS),
]


# Tuner objectives, one table for the local and the SageMaker tuner: metric name -> SageMaker's objective type
# (Optuna's direction is the same word in lower case).
OBJECTIVES = {"valid_accuracy": "Maximize", "valid_loss": "Minimize"}


def format_line(values: Mapping[str, float | int]) -> str:
    parts = []
    for key, value in values.items():
        parts.append(f"{key}={value}" if isinstance(value, int) else f"{key}={value:.4f}")
    return " ".join(parts)


def emit(values: Mapping[str, float | int]) -> None:
    # stdout, flushed: CloudWatch and the tuner read the container's log stream line by line.
    print(format_line(values), file=sys.stdout, flush=True)


def to_json() -> str:
    return json.dumps(METRIC_DEFINITIONS, indent=1)
