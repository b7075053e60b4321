"""Checkpoint identity and resuming: a checkpoint resumes only the run it was written by: every hyperparameter
that changes the result and a fingerprint of the data listing (the samples and labels of each split), so a reused
checkpoint directory never mixes two runs (a spot restart of the same job has the same identity and resumes).
A finished run's checkpoint only completes that same run (`_finished_run`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from imgclf import checkpoints
from imgclf.artifact import META_FILE
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


def job_name() -> str | None:
    """SageMaker's training job name (it sets TRAINING_JOB_NAME in the container): a spot restart keeps it, a new
    job has its own. None for local runs."""
    return os.environ.get("TRAINING_JOB_NAME") or None


def save(run: Run, epoch: int, best: BestSoFar, history: list) -> None:
    """Checkpoint after `epoch` (main process only, and only with a checkpoint directory)."""
    if run.cfg.checkpoint_dir is None or not run.layout.is_main:
        return
    state = {
        "identity": identity(run),
        "job": job_name(),  # not identity: the same run may be resumed on purpose by another job
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
    best = BestSoFar.from_checkpoint(state["best"])
    if state["epoch"] >= run.hp.epochs or best.stopped(run.hp.patience):
        _finished_run(run, state)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if run.layout.is_main:
        print(f"Resumed from checkpoint after epoch {state['epoch']}", flush=True)
    return state["epoch"], best, state["history"]


def _finished_run(run: Run, state: dict[str, Any]) -> None:
    """The newest checkpoint ends its run: resuming would train nothing and write that run's model again.

    Allowed only to complete the same run: a spot job restarted after its last checkpoint but before SageMaker
    uploaded the model (same job name; /opt/ml/model is empty in the new container), or a local run killed while
    writing its model, writes the model from the checkpoint without training, so the job still ends cleanly
    (retraining instead would cost the whole job again and give a different model).
    Anything else would pass the old run's model off as a new result: another job's finished run, or a model
    directory that already holds this run's model, is a UserError naming the directory.
    """
    stopped = "stopped early" if state["epoch"] < run.hp.epochs else "finished"
    where = (
        f"The checkpoint directory {run.cfg.checkpoint_dir} holds a run that {stopped} after epoch {state['epoch']} "
        f"(epochs={run.hp.epochs})"
    )
    theirs, mine = state.get("job"), job_name()
    if theirs != mine:
        raise UserError(
            f"{where}, written by {f'job {theirs}' if theirs else 'a run outside SageMaker'}; this "
            f"{f'job ({mine})' if mine else 'run'} would train nothing and publish that run's model as its own. "
            "Use an empty checkpoint directory for a new run (imgclf sagemaker train's default checkpoint prefix "
            "is per job), or deploy the finished job's model."
        )
    if (Path(run.cfg.model_dir) / META_FILE).exists():  # written last: the artifact is complete
        raise UserError(
            f"{where}, and its model is already in {run.cfg.model_dir}: nothing to train. Use an empty checkpoint "
            "directory to train again."
        )
    if run.layout.is_main:
        print(f"{where}: writing its model from that checkpoint without training (a restart).", flush=True)
