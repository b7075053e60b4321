"""The loop's steps: one training epoch and one evaluation pass; and the SIGTERM flag they stop on."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from imgclf import evaluation
from imgclf.errors import UserError
from imgclf.model import head
from imgclf.training import distributed
from imgclf.training.loaders import log_epoch_share
from imgclf.training.setup import Run


class StopFlag:
    """SIGTERM sets it; the loop checks it between steps, checkpoints, and raises TrainingInterrupted."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        print(
            "SIGTERM received: stopping after the current step and saving a checkpoint",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _set_train_mode(run: Run) -> None:
    # A frozen backbone stays in eval mode: its BatchNorm statistics must not drift with our batches.
    run.model.train(run.hp.train_backbone)
    head(run.model).train()


def train_epoch(run: Run, loader: DataLoader, epoch: int, stop: StopFlag) -> float:
    """One pass over the train loader (stops early on SIGTERM); the mean loss over every rank."""
    _set_train_mode(run)
    run.debug.mode("train")
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    log_epoch_share(run, loader, epoch)
    total, count = 0.0, 0
    bar = tqdm(
        total=len(loader),
        desc=f"epoch {epoch}/{run.hp.epochs}",
        leave=False,
        disable=not run.layout.is_main or None,
        mininterval=2,
    )
    t_data = time.perf_counter()
    for step, batch in enumerate(loader):
        if batch is None:
            continue
        x, y = run.to_device(batch[0]), batch[1].to(run.device, non_blocking=True)
        t_compute = time.perf_counter()
        run.optimizer.zero_grad(set_to_none=True)
        with run.autocast():
            loss = run.criterion(run.step_module(x), y)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        total += loss.item() * len(y)
        count += len(y)
        t_end = time.perf_counter()
        if run.profiler is not None:
            run.profiler.on_step(step, t_compute - t_data, t_end - t_compute)
        bar.update()
        t_data = time.perf_counter()
        if stop.signum is not None:
            break
    bar.close()
    total, count = distributed.all_reduce_sum([total, count], run.layout)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(run: Run, loader: DataLoader, mode: str = "eval") -> tuple[float, dict[str, Any]]:
    """(loss, `evaluation.report`: accuracy, balanced accuracy, macro-F1, AUC, per-class, confusion matrix) over the
    whole split; every rank evaluates all of it, so decisions agree."""
    run.model.eval()
    run.debug.mode(mode)
    total, count = 0.0, 0
    all_probs, all_labels = [], []
    for batch in loader:
        if batch is None:
            continue
        x, y = run.to_device(batch[0]), batch[1].to(run.device)
        with run.autocast():
            logits = run.trainable(x)
            loss = run.criterion(logits, y)
        total += loss.item() * len(y)
        count += len(y)
        all_probs.append(torch.softmax(logits.float(), 1).cpu())
        all_labels.append(y.cpu())
    if count == 0:
        raise UserError("No readable images left to evaluate on.")
    report = evaluation.report(torch.cat(all_labels).numpy(), torch.cat(all_probs).numpy(), run.sets.classes)
    return total / count, report
