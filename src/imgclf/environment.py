"""The SageMaker training contract: /opt/ml (or SAGEMAKER_BASE_DIR) read through sagemaker-training.

input/config/hyperparameters.json   every value a JSON string
input/config/resourceconfig.json    hosts, current_host
input/config/inputdataconfig.json   channels -> input/data/<channel>
input/config/debughookconfig.json   SageMaker Debugger (optional)
model/                              the artifact (SageMaker tars it to model.tar.gz)
checkpoints/                        synced to S3, restored on spot restarts
output/failure                      the reason a job failed (written by sagemaker-training)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BASE_DIR = "/opt/ml"
CHANNELS = ("train", "valid", "test")
# Channel names users gave the seeds' estimators for the same thing.
CHANNEL_ALIASES = {"validation": "valid", "val": "valid", "training": "train", "testing": "test"}


def base_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))


@dataclass
class SageMakerJob:
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    model_dir: Path
    checkpoint_dir: Path
    output_dir: Path
    debughook_config: Path
    profiler_config: Path
    output_data_dir: Path
    hosts: list[str]
    current_host: str


def read_job() -> SageMakerJob:
    """Everything a training job is told, via sagemaker-training's Environment (it reads base_dir at import)."""
    from sagemaker_training import environment as sm_env

    env = sm_env.Environment()
    root = Path(sm_env.base_dir)
    channels = {}
    for name, path in env.channel_input_dirs.items():
        canonical = CHANNEL_ALIASES.get(name, name)
        if canonical not in CHANNELS:
            log.warning("Ignoring unknown channel %r (imgclf reads train, valid, test)", name)
            continue
        channels[canonical] = Path(path)
    # SageMaker's hyperparameters minus its own sagemaker_* keys; values already JSON-decoded.
    return SageMakerJob(
        hyperparameters=dict(env.hyperparameters),
        channels=channels,
        model_dir=Path(env.model_dir),
        checkpoint_dir=root / "checkpoints",
        output_dir=Path(env.output_dir),
        debughook_config=root / "input" / "config" / "debughookconfig.json",
        profiler_config=root / "input" / "config" / "profilerconfig.json",
        output_data_dir=Path(env.output_data_dir),
        hosts=list(env.hosts),
        current_host=env.current_host,
    )


def fill_local_defaults(root: Path | None = None) -> bool:
    """`docker run IMAGE train` outside SageMaker: write the config files SageMaker would have written.

    Returns True when there is no data at all (no inputdataconfig.json and no input/data/<channel>): the
    caller then trains on the embedded sample. Existing files are never changed.
    """
    root = root or base_dir()
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    data_root = root / "input" / "data"
    present = sorted(p.name for p in data_root.iterdir() if p.is_dir()) if data_root.is_dir() else []
    no_data = not (config / "inputdataconfig.json").exists() and not present
    defaults = {
        "hyperparameters.json": {},
        "resourceconfig.json": {"current_host": "algo-1", "hosts": ["algo-1"]},
        "inputdataconfig.json": {name: {"TrainingInputMode": "File"} for name in present},
    }
    for name, content in defaults.items():
        path = config / name
        if not path.exists():
            path.write_text(json.dumps(content))
            log.info("Wrote default %s (not running on SageMaker)", path)
    return no_data
