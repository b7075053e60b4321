"""`fit`: set up a run, then the epoch loop (train, validate, keep the best, checkpoint, report), then finish.

Speed without changing results: DataLoader workers from the CPU count, pinned memory and AMP on CUDA,
channels_last, cudnn.benchmark. With a frozen backbone and no augmentation the backbone's output never
changes, so it is computed once (`cache-features`) and epochs train only the head on cached features.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from imgclf import evaluation, metrics
from imgclf.errors import TrainingInterrupted
from imgclf.hyperparameters import Hyperparameters
from imgclf.training import distributed, results, resume
from imgclf.training.early_stopping import BestSoFar
from imgclf.training.loaders import build_loaders
from imgclf.training.setup import Run, RunConfig, set_up
from imgclf.training.steps import StopFlag, evaluate, train_epoch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    hp: Hyperparameters,
    cfg: RunConfig,
    *,
    on_epoch: Callable | None = None,
    feature_cache: dict | None = None,
    profiler: Any = None,
    layout: distributed.Layout | None = None,
) -> dict[str, Any]:
    """Train, write the artifact to cfg.model_dir, return final metrics (valid_*, test_*, best_epoch, history)."""
    layout = layout or distributed.single_process()
    seed_everything(hp.seed)
    distributed.init(layout)
    try:
        log.info("Hyperparameters: %s", dict(hp.values))
        run = set_up(hp, cfg, layout, feature_cache, profiler)
        result = _train(run, on_epoch)
        run.debug.close()
        return result
    finally:
        distributed.shutdown()


def _train(run: Run, on_epoch: Callable | None) -> dict[str, Any]:
    train_loader, valid_loader, test_loader = build_loaders(run)
    done, best, history = resume.resume(run)
    with StopFlag() as stop:
        for epoch in range(done + 1, run.hp.epochs + 1):
            if best.stopped(run.hp.patience):
                break
            t0 = time.perf_counter()
            train_loss = train_epoch(run, train_loader, epoch, stop)
            if stop.signum is not None:
                _interrupted(run, epoch, stop.signum, best, history)
            valid_loss, valid_report = evaluate(run, valid_loader)
            run.scheduler.step()
            line = {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "valid_accuracy": valid_report["accuracy"],
                **evaluation.metric_values("valid", valid_report),
                "epoch_seconds": time.perf_counter() - t0,
            }
            history.append(line)
            best.update(epoch, valid_loss, valid_report, run.model)
            if run.layout.is_main:
                _report_epoch(run, epoch, line, best, history, on_epoch)
    return results.finish(run, best, history, test_loader)


def _report_epoch(
    run: Run, epoch: int, line: dict[str, Any], best: BestSoFar, history: list, on_epoch: Callable | None
) -> None:
    resume.save(run, epoch, best, history)  # first: a printed epoch is a saved epoch
    metrics.emit(line)
    if best.stopped(run.hp.patience):
        print(
            f"Early stopping: valid_loss has not improved for {run.hp.patience} epochs; keeping epoch {best.epoch}",
            flush=True,
        )
    if on_epoch is not None:
        on_epoch(epoch, line)


def _interrupted(run: Run, epoch: int, signum: int, best: BestSoFar, history: list) -> None:
    """SIGTERM mid-epoch: checkpoint the last finished epoch and stop with TrainingInterrupted."""
    resume.save(run, epoch - 1, best, history)
    checkpoint_dir = run.cfg.checkpoint_dir
    raise TrainingInterrupted(
        f"Training stopped by signal {signum} during epoch {epoch}; checkpoint saved in {checkpoint_dir}. "
        "Restart with the same checkpoint directory to resume."
        if checkpoint_dir
        else f"Training stopped by signal {signum} during epoch {epoch} (no checkpoint directory)."
    )
