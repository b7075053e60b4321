"""Entry points for the SageMaker training contract.

`main` is the framework module sagemaker-training runs (`SAGEMAKER_TRAINING_MODULE=imgclf.sagemaker_entry:main`):
the toolkit turns a raised `ClientError` into `/opt/ml/output/failure` + exit 1, and writes `success` otherwise.
`container_main` is what the train image runs for `train`: it fills in what SageMaker would have written
when the image runs outside SageMaker, then hands over to the toolkit's `train` program.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from imgclf import distributed, environment
from imgclf.errors import UserError

log = logging.getLogger(__name__)

_SAMPLE_ENV = "IMGCLF_TRAIN_ON_SAMPLE"
FRAMEWORK_MODULE = "imgclf.sagemaker_entry:main"


def _run_job() -> None:
    from imgclf.hyperparameters import Hyperparameters
    from imgclf.training import RunConfig, fit

    job = environment.read_job()
    hp = Hyperparameters.from_mapping(job.hyperparameters)
    channels = dict(job.channels)
    if "train" not in channels and os.environ.get(_SAMPLE_ENV) == "1":
        from imgclf.data import write_sample_data

        sample = Path(tempfile.mkdtemp(prefix="imgclf-sample-"))
        write_sample_data(sample)
        print(f"No input channels: training on the embedded digits sample ({sample})", flush=True)
        channels = {name: sample / name for name in environment.CHANNELS}
    if "train" not in channels:
        raise UserError(
            "No 'train' channel. Pass training data as the 'train' channel (ImageFolder layout: "
            "<class name>/<image files>; or an HDF5 file of id -> image with a CSV of id,label; or a CSV / JSON "
            "Lines manifest of path,label, see the data-format hyperparameter); 'valid' and 'test' channels are "
            "optional."
        )
    cfg = RunConfig(
        train_dir=channels["train"],
        valid_dir=channels.get("valid"),
        test_dir=channels.get("test"),
        model_dir=job.model_dir,
        checkpoint_dir=job.checkpoint_dir,
        debughook_config=job.debughook_config,
    )
    layout = distributed.from_hosts(job.hosts, job.current_host)
    if layout.procs_per_host > 1:
        _spawn_per_gpu(hp, cfg, layout)
        return
    profiler = contextlib.nullcontext()
    if job.profiler_config.is_file():
        from imgclf.profiling import Profiler

        # output/data is uploaded with the job (output.tar.gz): `imgclf report profile` reads it afterwards.
        profiler = Profiler(job.output_data_dir / "profile")
    with profiler as p:
        fit(hp, cfg, layout=layout, profiler=p)


def _gpu_worker(local_rank: int, hp, cfg, layout: distributed.Layout) -> None:
    from imgclf.training import fit

    fit(hp, cfg, layout=layout.for_local_rank(local_rank))


def _spawn_per_gpu(hp, cfg, layout: distributed.Layout) -> None:
    import torch.multiprocessing as mp

    try:
        mp.spawn(_gpu_worker, args=(hp, cfg, layout), nprocs=layout.procs_per_host, join=True)
    except mp.ProcessRaisedException as exc:
        # The child's traceback is in the log; the failure file gets its last line, the actual reason.
        raise UserError(str(exc).strip().splitlines()[-1]) from None


def main() -> None:
    from sagemaker_training import environment as sm_env
    from sagemaker_training import errors

    # The toolkit configures only its own logger: without this imgclf's INFO lines (classes, formats) are lost.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The toolkit swallows the error (exit 0, no failure file) when output/ is missing: make sure it exists.
    os.makedirs(sm_env.output_dir, exist_ok=True)
    try:
        _run_job()
    except UserError as exc:
        raise errors.ClientError(str(exc)) from None


def container_main() -> None:
    """The train image's `train`: defaults for local runs, then sagemaker-training's trainer."""
    logging.basicConfig(level=logging.INFO)
    if environment.fill_local_defaults():
        os.environ[_SAMPLE_ENV] = "1"
    os.environ.setdefault("SAGEMAKER_TRAINING_MODULE", FRAMEWORK_MODULE)
    from sagemaker_training import trainer

    trainer.train()


if __name__ == "__main__":
    container_main()
