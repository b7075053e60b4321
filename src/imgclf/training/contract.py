"""The container side of the SageMaker training contract: what the job is told, and the entry points.

/opt/ml (or SAGEMAKER_BASE_DIR), read through sagemaker-training's Environment (which also reads the SM_* variables):

input/config/hyperparameters.json   every value a JSON string
input/config/resourceconfig.json    hosts, current_host
input/config/inputdataconfig.json   channels -> input/data/<channel>, input mode, distribution (input_data.py)
input/config/debughookconfig.json   SageMaker Debugger (optional)
input/config/profilerconfig.json    SageMaker Profiler (optional)
model/                              the artifact (SageMaker tars it to model.tar.gz)
checkpoints/                        synced to S3, restored on spot restarts
output/failure                      the reason a job failed (written by sagemaker-training)
output/data/                        uploaded with the job (the profiler's records)

`main` is the framework module sagemaker-training runs (`SAGEMAKER_TRAINING_MODULE=imgclf.training.contract:main`):
the toolkit turns a raised `ClientError` into `/opt/ml/output/failure` + exit 1, and writes `success` otherwise.
`container_main` is what the train image runs for `train`: it fills in what SageMaker would have written
when the image runs outside SageMaker, then hands over to the toolkit's `train` program. The toolkit calls the
framework module without arguments, so a tree with no data at all is handed over by naming the entry point
that trains on the embedded sample (`main_on_sample`, `framework_module`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf.channels import canonical_channels
from imgclf.errors import UserError
from imgclf.hyperparameters import Hyperparameters
from imgclf.sample_data import write_fallback_sample
from imgclf.training import distributed
from imgclf.training.fit import fit
from imgclf.training.input_data import ChannelInput, channel_inputs
from imgclf.training.setup import RunConfig

log = logging.getLogger(__name__)

DEFAULT_BASE_DIR = "/opt/ml"
FRAMEWORK_MODULE = "imgclf.training.contract:main"
SAMPLE_FRAMEWORK_MODULE = "imgclf.training.contract:main_on_sample"


# ---- what the job is told -------------------------------------------------------------------------------------


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
    inputs: dict[str, ChannelInput]


def read_job() -> SageMakerJob:
    """Everything a training job is told, via sagemaker-training's Environment (it reads base_dir at import)."""
    from sagemaker_training import environment as sm_env

    env = sm_env.Environment()
    root = Path(sm_env.base_dir)
    channels = canonical_channels(env.channel_input_dirs)
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
        inputs=channel_inputs(env.input_data_config),
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


# ---- entry points ---------------------------------------------------------------------------------------------


def _run_job(train_on_sample: bool) -> None:
    job = read_job()
    hp = Hyperparameters.from_mapping(job.hyperparameters)
    channels = dict(job.channels)
    if "train" not in channels and train_on_sample:
        sample = write_fallback_sample("No input channels")
        channels = {"train": sample.train, "valid": sample.valid, "test": sample.test}
    if "train" not in channels:
        raise UserError(
            "No 'train' channel. Pass training data as the 'train' channel (ImageFolder layout: "
            "<class name>/<image files>; or an HDF5 file of id -> image with a CSV of id,label; or a CSV / JSON "
            "Lines manifest of path,label, see the data-format hyperparameter); 'valid' and 'test' channels are "
            "optional."
        )
    train_input = job.inputs.get("train", ChannelInput())
    cfg = RunConfig(
        train_dir=channels["train"],
        valid_dir=channels.get("valid"),
        test_dir=channels.get("test"),
        model_dir=job.model_dir,
        checkpoint_dir=job.checkpoint_dir,
        debughook_config=job.debughook_config,
        train_host_sharded=train_input.host_sharded and len(job.hosts) > 1,
        check_images=train_input.mode != "FastFile",
    )
    layout = distributed.from_hosts(job.hosts, job.current_host)
    if layout.procs_per_host > 1:
        _spawn_per_gpu(hp, cfg, layout)
        return
    profiler = contextlib.nullcontext()
    if job.profiler_config.is_file():
        from imgclf.training.profiler import Profiler

        # output/data is uploaded with the job (output.tar.gz): `imgclf report profile` reads it afterwards.
        profiler = Profiler(job.output_data_dir / "profile")
    with profiler as p:
        fit(hp, cfg, layout=layout, profiler=p)


def _gpu_worker(local_rank: int, hp, cfg, layout: distributed.Layout) -> None:
    fit(hp, cfg, layout=layout.for_local_rank(local_rank))


def _spawn_per_gpu(hp, cfg, layout: distributed.Layout) -> None:
    import torch.multiprocessing as mp

    try:
        mp.spawn(_gpu_worker, args=(hp, cfg, layout), nprocs=layout.procs_per_host, join=True)
    except mp.ProcessRaisedException as exc:
        # The child's traceback is in the log; the failure file gets its last line, the actual reason.
        raise UserError(str(exc).strip().splitlines()[-1]) from None


def main(train_on_sample: bool = False) -> None:
    """The framework module: run the job; with `train_on_sample`, a job with no train channel trains on the
    embedded sample instead of failing."""
    from sagemaker_training import environment as sm_env
    from sagemaker_training import errors

    # The toolkit configures only its own logger: without this imgclf's INFO lines (classes, formats) are lost.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The toolkit swallows the error (exit 0, no failure file) when output/ is missing: make sure it exists.
    os.makedirs(sm_env.output_dir, exist_ok=True)
    try:
        _run_job(train_on_sample)
    except UserError as exc:
        raise errors.ClientError(str(exc)) from None


def main_on_sample() -> None:
    """The framework module `IMAGE train` names outside SageMaker when the tree holds no data at all."""
    main(train_on_sample=True)


def framework_module(no_data: bool, configured: str | None) -> str:
    """The entry point the toolkit is to run: ours (or the one configured), or, when there is no data at all and
    ours was to run, the one that trains on the embedded sample. A module someone else configured is kept."""
    module = configured or FRAMEWORK_MODULE
    return SAMPLE_FRAMEWORK_MODULE if no_data and module == FRAMEWORK_MODULE else module


def container_main() -> None:
    """The train image's `train`: defaults for local runs, then sagemaker-training's trainer."""
    logging.basicConfig(level=logging.INFO)
    no_data = fill_local_defaults()
    # SAGEMAKER_TRAINING_MODULE is how the toolkit is told what to run (the image sets it to FRAMEWORK_MODULE).
    os.environ["SAGEMAKER_TRAINING_MODULE"] = framework_module(no_data, os.environ.get("SAGEMAKER_TRAINING_MODULE"))
    from sagemaker_training import trainer

    trainer.train()


if __name__ == "__main__":
    container_main()
