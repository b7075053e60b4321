"""SDK v2: the HyperparameterTuner and Estimator imgclf.sagemaker builds for SageMaker, as the requests the SDK
would send (CreateHyperParameterTuningJob / CreateTrainingJob); no AWS call is made."""

from __future__ import annotations

from _common import emit, load_args
from sagemaker.tuner import HyperparameterTuner

from imgclf.sagemaker import jobs, sdk_v2
from imgclf.sagemaker.target import resolve_target

args = load_args()
target = resolve_target(
    local=False, role=args["role"], bucket=args["bucket"], region="us-east-1", check_credentials=False
)
inputs = {name: f"s3://{args['bucket']}/data/{name}/" for name in ("train", "valid", "test")}
result = {}
for objective in ("valid_accuracy", "valid_loss"):
    estimator = sdk_v2.build_estimator(
        target, image_uri=args["image"], hyperparameters=args["hyperparameters"], spot=True
    )
    tuner = sdk_v2.build_tuner(estimator, objective_metric=objective, max_jobs=6, max_parallel_jobs=2)
    assert isinstance(tuner, HyperparameterTuner)
    result[objective] = sdk_v2.tuner_request(tuner, inputs, job_name=f"imgclf-{objective.replace('_', '-')}")

# Two spot jobs in one bucket, named as `imgclf sagemaker train` names them: each syncs its own checkpoint prefix.
for key in ("training", "second_training"):
    job_name = jobs.unique_job_name()
    estimator = sdk_v2.build_estimator(
        target, image_uri=args["image"], hyperparameters=args["hyperparameters"], spot=True, job_name=job_name
    )
    result[key] = sdk_v2.training_request(estimator, inputs, job_name=job_name)
emit(result)
