"""The end of a run: the best epoch's weights back in the model, the test split evaluated, the per-class reports
and the artifact written (the artifact last: a model.pt means the run finished), then the inference engines
exported beside it (hyperparameter export-engines)."""

from __future__ import annotations

import logging
import time
from typing import Any

from torch.utils.data import DataLoader

from imgclf import evaluation, metrics
from imgclf.artifact import save_artifact, writing_to
from imgclf.training.early_stopping import BestSoFar
from imgclf.training.setup import Run
from imgclf.training.steps import evaluate

log = logging.getLogger(__name__)


def finish(run: Run, best: BestSoFar, history: list, test_loader: DataLoader | None) -> dict[str, Any]:
    """Final metrics (valid_* of the best epoch, test_*, best_epoch, epochs, history); writes the model dir."""
    run.model.load_state_dict(best.state)
    result: dict[str, Any] = {
        "valid_loss": best.valid_loss,
        "valid_accuracy": best.valid_accuracy,
        "best_epoch": best.epoch,
        "epochs": len(history),
        "history": history,
    }
    reports = {}
    if best.valid_report is not None:
        reports["valid"] = best.valid_report
        result.update(evaluation.metric_values("valid", best.valid_report))
    if test_loader is not None:
        test_loss, test_report = evaluate(run, test_loader, mode="predict")
        test_values = {"test_loss": test_loss, "test_accuracy": test_report["accuracy"]}
        test_values.update(evaluation.metric_values("test", test_report))
        reports["test"] = test_report
        result.update(test_values)
        if run.layout.is_main:
            metrics.emit(test_values)
    if run.layout.is_main:
        _write_model_dir(run, reports)
    return result


def _write_model_dir(run: Run, reports: dict[str, Any]) -> None:
    model_dir = run.cfg.model_dir
    if reports:
        split = "test" if "test" in reports else "valid"
        log.info("Per-class metrics (%s):\n%s", split, evaluation.format_table(reports[split]))
        with writing_to(model_dir):
            evaluation.write(model_dir, reports, run.sets.classes)
    save_artifact(run.model, run.meta, run.sets.classes, model_dir)  # last: model.pt means done
    log.info("Model written to %s", model_dir)
    if run.hp.export_engines:
        export_engines(run)


def export_engines(run: Run) -> None:
    """ONNX / int8 engines beside model.pt (imgclf.export), validated on this run's validation split and
    calibrated on its training images, whatever their channel format. Never fails the run: the eager model is
    written already and serves as it is; a failure is a warning with its reason."""
    started = time.monotonic()
    readers = run.sets.readers or {}
    try:
        from imgclf.export import export_engines as export

        record = export(
            run.cfg.model_dir, (run.sets.valid, readers.get("valid")), (run.sets.train, readers.get("train"))
        )
    except Exception as exc:  # noqa: BLE001 - ImportError (no imgclf[export]) included: model.pt still serves
        log.warning("Inference engines not exported (%s: %s); model.pt serves as it is", type(exc).__name__, exc)
        return
    log.info(
        "Inference engines exported in %.1f s: kept %s%s",
        time.monotonic() - started,
        ", ".join(record["engines"]) or "none",
        "".join(f"; {name} rejected: {why}" for name, why in record["rejected"].items()),
    )
