"""Checkpoint identity and resuming: a checkpoint resumes only the run it was written by (same architecture,
classes, image size, backbone mode), so a reused checkpoint directory never mixes two configurations."""

from __future__ import annotations

from typing import Any

import torch

from imgclf import checkpoints
from imgclf.errors import UserError
from imgclf.training.early_stopping import BestSoFar
from imgclf.training.setup import Run


def identity(run: Run) -> dict[str, Any]:
    return {
        "arch": run.hp.arch,
        "classes": run.sets.classes,
        "image_size": run.hp.image_size,
        "train_backbone": run.hp.train_backbone,
        "cached": run.cached,
    }


def save(run: Run, epoch: int, best: BestSoFar, history: list) -> None:
    """Checkpoint after `epoch` (main process only, and only with a checkpoint directory)."""
    if run.cfg.checkpoint_dir is None or not run.layout.is_main:
        return
    state = {
        "identity": identity(run),
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "best": best.to_checkpoint(),
        "history": history,
        "rng": torch.get_rng_state(),
    }
    checkpoints.save(run.cfg.checkpoint_dir, epoch, state)


def resume(run: Run) -> tuple[int, BestSoFar, list]:
    """(epochs done, best so far, history) from the newest checkpoint, restoring model, optimiser, scheduler and
    RNG; (0, a fresh BestSoFar, []) when there is none."""
    state = checkpoints.load_latest(run.cfg.checkpoint_dir)
    if state is None:
        return 0, BestSoFar(), []
    if state["identity"] != identity(run):
        raise UserError(
            f"The checkpoint directory {run.cfg.checkpoint_dir} holds a checkpoint of a different run "
            f"({state['identity']} vs {identity(run)}). Use an empty checkpoint directory "
            "(checkpoint_s3_uri) for a new configuration."
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if run.layout.is_main:
        print(f"Resumed from checkpoint after epoch {state['epoch']}", flush=True)
    return state["epoch"], BestSoFar.from_checkpoint(state["best"]), state["history"]
