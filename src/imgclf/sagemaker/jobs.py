"""Plain data every SageMaker job, tuner and endpoint is built from; no SDK needed (unit-tested in the main venv).

All of it comes from the one hyperparameter spec (`imgclf.hyperparameters`), the trainer's metric regexes and
objectives (`imgclf.metrics`), so a job, a tuner and the local trainer can never disagree about names or ranges.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgclf import hyperparameters as hp_spec
from imgclf.errors import UserError
from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVES
from imgclf.sagemaker.target import is_remote

DEFAULT_TRAIN_IMAGE = "imgclf-train:latest"
DEFAULT_SERVE_IMAGE = "imgclf-serve:latest"

PROFILER_INTERVAL_MS = 500

JPEG = "image/jpeg"
JSON = "application/json"

CHANNELS = ("train", "valid", "test")


def unique_job_name(base: str = "imgclf") -> str:
    """BASE-YYYYmmdd-HHMMSS-xxxxxxxx: unique per call, at most 63 characters (SageMaker's job-name limit).

    Chosen here rather than by the SDK at fit time, so the checkpoint prefix can carry it (checkpoint_uri).
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    suffix = f"-{stamp}-{secrets.token_hex(4)}"  # 32 random bits: no birthday clash among calls in one second
    return base[: 63 - len(suffix)].rstrip("-") + suffix


def checkpoint_uri(bucket: str, prefix: str, job_name: str) -> str:
    """Where one training job syncs /opt/ml/checkpoints: a prefix of its own.

    A shared s3://BUCKET/PREFIX/checkpoints made every spot job of a bucket resume (or re-save) the previous job's
    run. A spot restart of the same job keeps its name, so it still finds its own checkpoints.
    """
    return f"s3://{bucket}/{prefix}/checkpoints/{job_name}"


def job_hyperparameters(given: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What a job's `hyperparameters=` gets: the given values, validated against SPEC, as strings.

    Only the values given are sent (the image's defaults are SPEC's defaults); booleans as "true"/"false",
    the form `Hyperparameters.from_mapping` reads back from hyperparameters.json.
    """
    given = dict(given or {})
    typed = hp_spec.Hyperparameters.from_mapping(given)
    as_strings = typed.to_sagemaker()
    names = {hp_spec.BY_NAME[hp_spec.canonical_name(k)].name for k in given}
    return {p.name: as_strings[p.name] for p in hp_spec.SPEC if p.name in names}


def objective(metric: str) -> tuple[str, str]:
    """(objective_metric_name, objective_type) for a tuner; the metric must be one the trainer prints."""
    if metric not in OBJECTIVES:
        raise UserError(f"Tuning objective must be one of {', '.join(OBJECTIVES)}; got {metric!r}.")
    names = {d["Name"] for d in METRIC_DEFINITIONS}
    assert metric in names, f"{metric} is not in METRIC_DEFINITIONS"
    return metric, OBJECTIVES[metric]


def metric_definitions() -> list[dict[str, str]]:
    """A fresh copy of METRIC_DEFINITIONS (the SDK may keep and change what it is given)."""
    return [dict(d) for d in METRIC_DEFINITIONS]


def debugger_collections(given: Mapping[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """Collections for DebuggerHookConfig from the debug-* hyperparameters (same defaults as local runs)."""
    hp = hp_spec.Hyperparameters.from_mapping(dict(given or {}))
    params = {"train.save_interval": str(hp.debug_train_interval), "eval.save_interval": str(hp.debug_eval_interval)}
    names = [c.strip() for c in str(hp.debug_collections).split(",") if c.strip()]
    return {name: dict(params) for name in names}


def channels(
    data: str | None, train: str | None = None, valid: str | None = None, test: str | None = None
) -> dict[str, str]:
    """Channel name -> path or URI. DATA holds train/ (valid/, test/); explicit channels override it.

    Local folders are kept as paths (file:// in local mode, uploaded to S3 otherwise); s3:// URIs pass through.
    """
    out: dict[str, str] = {}
    if data:
        if is_remote(data):
            base = data.rstrip("/")
            out = {name: f"{base}/{name}/" for name in CHANNELS}
        else:
            root = Path(data)
            if not root.is_dir():
                raise UserError(f"--data {data} is not a directory (nor an s3:// prefix).")
            if not (root / "train").is_dir():
                raise UserError(f"--data {data} has no train/ folder (ImageFolder layout: train/<class>/<images>).")
            out = {name: str(root / name) for name in CHANNELS if (root / name).is_dir()}
    for name, value in (("train", train), ("valid", valid), ("test", test)):
        if value:
            out[name] = value
    if "train" not in out:
        raise UserError("No training data: pass --data DIR_OR_S3_PREFIX (with train/ inside) or --train.")
    for name, value in out.items():
        if not is_remote(value) and not value.startswith("file://") and not Path(value).is_dir():
            raise UserError(f"Channel {name}: {value} is not a directory.")
    return out


# ---- input modes and distribution across hosts -------------------------------------------------------------------

INPUT_MODES = ("File", "FastFile", "Pipe")
DISTRIBUTIONS = {"replicated": "FullyReplicated", "sharded": "ShardedByS3Key"}


def channel_distributions(
    chans: Mapping[str, str], *, input_mode: str, distribution: str, local: bool
) -> dict[str, str]:
    """Channel -> S3DataDistributionType; refuses what the trainer or local mode cannot do, before any call.

    Pipe is refused: SageMaker streams a channel through a FIFO, and none of the formats the trainer reads
    (ImageFolder, one HDF5 file, a manifest of image files) can be read from one. FastFile streams the same files
    lazily and needs no change to the data. `sharded` splits only the train channel across hosts (ShardedByS3Key);
    valid and test stay whole on every host so that every rank evaluates the same split and agrees.
    """
    if input_mode not in INPUT_MODES:
        raise UserError(f"--input-mode must be one of {', '.join(INPUT_MODES)}; got {input_mode!r}.")
    if input_mode == "Pipe":
        raise UserError(
            "--input-mode Pipe is not supported: the trainer reads ImageFolder, HDF5 and manifest channels, none "
            "of which can be read from a pipe. Use --input-mode FastFile, which streams the files from S3 "
            "on first read and needs no local copy of the dataset."
        )
    if distribution not in DISTRIBUTIONS:
        raise UserError(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}.")
    if distribution == "sharded":
        if local:
            raise UserError(
                "--distribution sharded (ShardedByS3Key) does not exist in SageMaker local mode, which copies every "
                "channel whole to every container; run it on SageMaker, or drop it locally (the trainer then "
                "splits the train channel by rank)."
            )
        if "valid" not in chans:
            raise UserError(
                "--distribution sharded needs a valid channel (--valid or DATA/valid): each host holds only its "
                "share of train, so a validation split held out of it would differ from host to host."
            )
    return {name: DISTRIBUTIONS[distribution] if name == "train" else "FullyReplicated" for name in chans}
