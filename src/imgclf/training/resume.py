"""Checkpoint identity and resuming: a checkpoint resumes only the run it was written by: every hyperparameter
that changes the result and a fingerprint of the data listing (the samples and labels of each split), so a reused
checkpoint directory never mixes two runs (a spot restart of the same job has the same identity and resumes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from imgclf import checkpoints
from imgclf.errors import UserError
from imgclf.training.early_stopping import BestSoFar
from imgclf.training.setup import Run

# Settings that change how a run is watched or fed, not what it computes.
NOT_IN_IDENTITY = ("num-workers", "export-engines", "debug-train-interval", "debug-eval-interval", "debug-collections")


def data_fingerprint(run: Run) -> str:
    """sha256 of every split's (sample, label) listing: another dataset, or the same one relabelled, differs."""
    listing = {split: sorted(map(list, getattr(run.sets, split) or [])) for split in ("train", "valid", "test")}
    return hashlib.sha256(json.dumps([run.sets.classes, listing]).encode()).hexdigest()


def identity(run: Run) -> dict[str, Any]:
    settings = {k: v for k, v in run.hp.to_sagemaker().items() if k not in NOT_IN_IDENTITY}
    return {
        "hyperparameters": settings,
        "classes": run.sets.classes,
        "data": data_fingerprint(run),
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
    mine = identity(run)
    if state["identity"] != mine:
        theirs = state["identity"] if isinstance(state["identity"], dict) else {}
        differ = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        if "hyperparameters" in differ:
            old, new = theirs.get("hyperparameters") or {}, mine["hyperparameters"]
            differ += [
                f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        raise UserError(
            f"The checkpoint directory {run.cfg.checkpoint_dir} holds a checkpoint of a different run (differs in "
            f"{', '.join(differ)}). Use an empty checkpoint directory (checkpoint_s3_uri) for a new run."
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if run.layout.is_main:
        print(f"Resumed from checkpoint after epoch {state['epoch']}", flush=True)
    return state["epoch"], BestSoFar.from_checkpoint(state["best"]), state["history"]
