"""SDK v2: Estimator(instance_type='local', instance_count=N).fit() on file:// channels with our train image."""

from __future__ import annotations

import time

from _common import emit, load_args

from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.target import file_uri, resolve_target

args = load_args()
target = resolve_target(local=True, workdir=args["workdir"])
estimator = sdk_v2.build_estimator(
    target,
    image_uri=args["image"],
    hyperparameters=args["hyperparameters"],
    instance_count=args["instance_count"],
)
started = time.monotonic()
estimator.fit({name: file_uri(path) for name, path in args["channels"].items()}, wait=True)
emit(
    {
        "seconds": time.monotonic() - started,
        "model_data": estimator.model_data,
        "job_name": estimator.latest_training_job.name,
        "instance_type": estimator.instance_type,
        "metric_definitions": estimator.metric_definitions,
        "hyperparameters": estimator.hyperparameters(),
    }
)
