"""Classification metrics for imbalanced data (numpy only) and the confusion-matrix picture.

Per class precision / recall / F1 / support, accuracy, balanced accuracy (mean recall over the classes present),
macro-F1, and ROC-AUC: the positive class's AUC for two classes, the macro one-vs-rest AUC for more (so the metric
exists on every problem and a tuner can optimise it). Definitions follow scikit-learn's (`balanced_accuracy_score`,
`f1_score(average="macro")`, `roc_auc_score(multi_class="ovr")`), which is not a dependency here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPORT_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(
        np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64),
        minlength=num_classes * num_classes,
    ).reshape(num_classes, num_classes)


def _rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney U with ties counted half); NaN when only one class is present."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Two classes: AUC of class 1's probability. More: mean one-vs-rest AUC over classes present (and absent
    from no side)."""
    labels = np.asarray(labels)
    if probabilities.shape[1] == 2:
        return binary_auc(labels == 1, probabilities[:, 1])
    aucs = [binary_auc(labels == c, probabilities[:, c]) for c in range(probabilities.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def report(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Everything about one split's predictions, JSON-ready."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = len(class_names)
    predicted = probabilities.argmax(1)
    cm = confusion_matrix(labels, predicted, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted_count = cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, tp / predicted_count, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    # macro-F1 over the classes that occur in the labels or the predictions (scikit-learn's label set).
    seen = present | (predicted_count > 0)
    auc = roc_auc(labels, probabilities) if len(labels) else math.nan
    return {
        "count": int(len(labels)),
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "auc": None if math.isnan(auc) else auc,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def metric_values(prefix: str, rep: dict[str, Any]) -> dict[str, float]:
    """The metric-line fields of a report: `<prefix>_balanced_accuracy`, `<prefix>_macro_f1`, `<prefix>_auc`."""
    values = {f"{prefix}_balanced_accuracy": rep["balanced_accuracy"], f"{prefix}_macro_f1": rep["macro_f1"]}
    if rep["auc"] is not None:
        values[f"{prefix}_auc"] = rep["auc"]
    return values


def format_table(rep: dict[str, Any]) -> str:
    """Per-class precision/recall/F1 as a text table for the log."""
    width = max([5, *(len(n) for n in rep["per_class"])])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name, m in rep["per_class"].items():
        lines.append(f"{name:<{width}}  {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:6.4f} {m['support']:8d}")
    return "\n".join(lines)


def draw_confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> Image.Image:
    """Rows: true class, columns: predicted; cells shaded by the row's share, labelled with counts."""
    cm = np.asarray(cm)
    k = len(class_names)
    cell = max(24, min(64, 900 // max(k, 1)))
    font = ImageFont.load_default(size=max(9, cell // 3))
    small = ImageFont.load_default(size=12)
    label_w = min(160, 14 + 8 * max(len(n) for n in class_names))
    left, top = label_w + 24, 56
    title_w = int(small.getlength(title)) + 16
    img = Image.new("RGB", (max(left + k * cell + 16, title_w), top + k * cell + label_w + 24), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), title, fill="black", font=small)
    draw.text((left, top - 18), "predicted", fill="black", font=small)
    draw.text((4, top - 18), "true", fill="black", font=small)
    row_sums = cm.sum(1, keepdims=True).clip(min=1)
    for i in range(k):
        for j in range(k):
            share = cm[i, j] / row_sums[i, 0]
            shade = int(255 - 200 * share)
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text(
                (x + cell / 2, y + cell / 2),
                str(cm[i, j]),
                fill="white" if share > 0.6 else "black",
                font=font,
                anchor="mm",
            )
    for i, name in enumerate(class_names):
        draw.text((left - 6, top + i * cell + cell / 2), name[:18], fill="black", font=small, anchor="rm")
        column = Image.new("RGBA", (label_w, cell), (255, 255, 255, 0))
        ImageDraw.Draw(column).text((label_w - 4, cell / 2), name[:18], fill="black", font=small, anchor="rm")
        rotated = column.rotate(90, expand=True)
        img.paste(rotated, (left + i * cell, top + k * cell + 6), rotated)
    return img


def write(model_dir: str | Path, reports: dict[str, dict[str, Any]], class_names: Sequence[str]) -> None:
    """evaluation.json (every split's report) and confusion_matrix.png (test if there is one, else valid)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / REPORT_FILE).write_text(json.dumps({"classes": list(class_names), **reports}, indent=1))
    split = "test" if "test" in reports else "valid"
    rep = reports[split]
    title = f"{split}: accuracy {rep['accuracy']:.3f}, balanced accuracy {rep['balanced_accuracy']:.3f}"
    draw_confusion_matrix(rep["confusion_matrix"], class_names, title).save(model_dir / CONFUSION_FILE)
