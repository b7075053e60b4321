"""SDK v2: the HyperparameterTuner and Estimator the launcher builds for SageMaker, as the requests the SDK
would send (CreateHyperParameterTuningJob / CreateTrainingJob); no AWS call is made."""

from __future__ import annotations

from _common import emit, load_args
from sagemaker.estimator import _TrainingJob
from sagemaker.tuner import HyperparameterTuner

from imgclf import launch

args = load_args()
target = launch.resolve_target(
    local=False, role=args["role"], bucket=args["bucket"], region="us-east-1", check_credentials=False
)
inputs = {name: f"s3://{args['bucket']}/data/{name}/" for name in ("train", "valid", "test")}
result = {}
for objective in ("valid_accuracy", "valid_loss"):
    estimator = launch.build_estimator(
        target, image_uri=args["image"], hyperparameters=args["hyperparameters"], spot=True
    )
    tuner = launch.build_tuner(estimator, objective_metric=objective, max_jobs=6, max_parallel_jobs=2)
    assert isinstance(tuner, HyperparameterTuner)
    result[objective] = launch.tuner_request(tuner, inputs, job_name=f"imgclf-{objective.replace('_', '-')}")

estimator = launch.build_estimator(target, image_uri=args["image"], hyperparameters=args["hyperparameters"], spot=True)
estimator._prepare_for_training(job_name="imgclf-preview")
result["training"] = _TrainingJob._get_train_args(estimator, inputs, experiment_config={})
emit(result)
