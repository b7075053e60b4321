"""Evaluate a saved model on a test channel: `imgclf evaluate` and the pipeline's evaluation processing step.

The metrics are imgclf.evaluation's (`report`: accuracy, balanced accuracy, macro-F1, AUC, per class, confusion
matrix); this module only predicts with the artifact and lays the report out the way SageMaker reads model
quality: Model Monitor's model-quality statistics, `{"multiclass_classification_metrics": {"<metric>":
{"value": v, "standard_deviation": s}, ..., "confusion_matrix": {"<true>": {"<predicted>": n}}}}` (the layout
the Model Registry shows as ModelMetrics.ModelQuality.Statistics and the SDK's model-card
`ClassificationParser` reads). Standard deviations are bootstrap estimates over the test images (`bootstrap`
resamples; 0 leaves them null). The full report (per class, the classes, the count) sits beside it.

torch is imported inside `predict`, so the layout functions (and their unit tests) need only numpy.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import evaluation
from imgclf.errors import UserError
from imgclf.processing_contract import EVALUATION_GROUP as GROUP
from imgclf.processing_contract import resolve_model

log = logging.getLogger(__name__)


def _weighted(rep: dict[str, Any], key: str) -> float:
    """Support-weighted mean of a per-class value (SageMaker's weighted_precision/recall/f1)."""
    per_class = rep["per_class"].values()
    total = sum(m["support"] for m in per_class)
    return float(sum(m[key] * m["support"] for m in per_class) / total) if total else 0.0


def _scalars(rep: dict[str, Any]) -> dict[str, float | None]:
    return {
        "accuracy": rep["accuracy"],
        "balanced_accuracy": rep["balanced_accuracy"],
        "macro_f1": rep["macro_f1"],
        "auc": rep["auc"],
        "weighted_precision": _weighted(rep, "precision"),
        "weighted_recall": _weighted(rep, "recall"),
        "weighted_f1": _weighted(rep, "f1"),
    }


def _bootstrap_std(
    labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], resamples: int, seed: int
) -> dict[str, float | None]:
    if resamples <= 0 or len(labels) < 2:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        for name, value in _scalars(evaluation.report(labels[idx], probabilities[idx], class_names)).items():
            if value is not None:
                draws.setdefault(name, []).append(value)
    return {name: float(np.std(values, ddof=1)) for name, values in draws.items() if len(values) > 1}


def model_quality(
    labels: Sequence[int],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    *,
    bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """evaluation.json: SageMaker's model-quality layout plus imgclf's full report."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rep = evaluation.report(labels, probabilities, class_names)
    std = _bootstrap_std(labels, probabilities, class_names, bootstrap, seed)
    group: dict[str, Any] = {
        name: {"value": value, "standard_deviation": std.get(name)}
        for name, value in _scalars(rep).items()
        if value is not None  # AUC is undefined when the test set holds a single class
    }
    group["confusion_matrix"] = {
        true: {pred: int(n) for pred, n in zip(class_names, row, strict=True)}
        for true, row in zip(class_names, rep["confusion_matrix"], strict=True)
    }
    return {
        "version": 0.0,
        "dataset": {"item_count": rep["count"]},
        GROUP: group,
        "classes": list(class_names),
        "report": rep,
    }


def predict(
    model_dir: Path, test_dir: Path, batch_size: int = 64, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, softmax probabilities, class names) of the artifact on the test channel, class order the model's."""
    import torch

    from imgclf.artifact import load_artifact
    from imgclf.channel_formats import load_channel
    from imgclf.images import eval_transform
    from imgclf.shards import ShardSource, ShardStream
    from imgclf.training.loaders import ImageDataset, collate_skip_bad

    artifact = load_artifact(model_dir, "cpu")
    class_names = [artifact.index_to_name[i] for i in range(len(artifact.index_to_name))]
    channel = load_channel(test_dir, classes=class_names, channel="test")
    if isinstance(channel.reader, ShardSource):  # tar shards: read as a stream, the whole channel
        dataset = ShardStream(channel.reader, channel.samples, eval_transform(artifact.meta))
    else:
        dataset = ImageDataset(channel.samples, eval_transform(artifact.meta), reader=channel.reader)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_bad
    )
    labels, probs = [], []
    with torch.no_grad():
        for batch in loader:
            if batch is None:
                continue
            images, targets = batch
            probs.append(torch.softmax(artifact.model(images).float(), 1))
            labels.append(targets)
    if not labels:
        raise UserError(f"No image of the test channel {test_dir} could be read.")
    return torch.cat(labels).numpy(), torch.cat(probs).numpy(), class_names


def write(out_dir: Path, doc: dict[str, Any]) -> Path:
    """evaluation.json and confusion_matrix.png in out_dir; returns the JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / evaluation.REPORT_FILE
    path.write_text(json.dumps(doc, indent=1))
    rep = doc["report"]
    title = f"test: accuracy {rep['accuracy']:.3f}, balanced accuracy {rep['balanced_accuracy']:.3f}"
    evaluation.draw_confusion_matrix(rep["confusion_matrix"], doc["classes"], title).save(
        out_dir / evaluation.CONFUSION_FILE
    )
    return path


def evaluate(
    model: str | Path, test: str | Path, out: str | Path, *, batch_size: int = 64, bootstrap: int = 100
) -> dict[str, Any]:
    """Predict, lay out, write; returns the evaluation document."""
    test = Path(test)
    if not test.is_dir():
        raise UserError(f"--data {test} is not a directory (the processing job mounts the test channel there).")
    with tempfile.TemporaryDirectory(prefix="imgclf-evaluate-") as scratch:
        model_dir = resolve_model(model, scratch)
        labels, probabilities, class_names = predict(model_dir, test, batch_size)
    doc = model_quality(labels, probabilities, class_names, bootstrap=bootstrap)
    path = write(Path(out), doc)
    log.info("Per-class metrics (test):\n%s", evaluation.format_table(doc["report"]))
    log.info("Wrote %s", path)
    return doc
