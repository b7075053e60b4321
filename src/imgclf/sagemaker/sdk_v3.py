"""SDK v3 (`sagemaker>=3`): ModelTrainer for the train image and `deploy_v3` for endpoints.

v3 has no Estimator/Model/Transformer; tuning and batch transform use SDK v2 (imgclf.sagemaker.sdk_v2). The SDK
is imported inside the functions because it is not a dependency of imgclf (scripts/sdk_venvs.sh makes
.venv-sdk3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgclf.errors import UserError
from imgclf.metrics import METRIC_DEFINITIONS
from imgclf.sagemaker.jobs import (
    DEFAULT_TRAIN_IMAGE,
    channel_distributions,
    checkpoint_uri,
    job_hyperparameters,
    unique_job_name,
)
from imgclf.sagemaker.target import Target, is_remote, sdk_major


def _data_source(value: str, distribution: str):
    """A local folder as its path; an S3 URI as a string, or as an S3DataSource when it is sharded across hosts."""
    if not is_remote(value):
        return str(Path(value).resolve())
    if distribution == "FullyReplicated":
        return value
    from sagemaker.train.configs import S3DataSource

    return S3DataSource(s3_data_type="S3Prefix", s3_uri=value, s3_data_distribution_type=distribution)


def build_model_trainer(
    target: Target,
    *,
    data: Mapping[str, str],
    image_uri: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    instance_type: str | None = None,
    instance_count: int = 1,
    local_container_root: str | os.PathLike | None = None,
    max_run: int = 3600,
    base_job_name: str = "imgclf",
    input_mode: str = "File",
    distribution: str = "replicated",
):
    """ModelTrainer for the train image (Mode.LOCAL_CONTAINER with --local).

    v3 runs the image without the `train` argument; our image defaults to training for that reason.
    """
    major = sdk_major()
    if major < 3:
        raise UserError(f"ModelTrainer needs SageMaker SDK v3 (`sagemaker>=3`), found SDK {major}.")
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, MetricDefinition, OutputDataConfig, StoppingCondition
    from sagemaker.train.model_trainer import Mode

    kinds = channel_distributions(data, input_mode=input_mode, distribution=distribution, local=target.local)
    inputs = [
        InputData(channel_name=name, data_source=_data_source(value, kinds[name])) for name, value in data.items()
    ]
    job_base = base_job_name if target.local else unique_job_name(base_job_name)
    kwargs: dict[str, Any] = dict(
        training_image=image_uri or (DEFAULT_TRAIN_IMAGE if target.local else None),
        hyperparameters=job_hyperparameters(hyperparameters),
        input_data_config=inputs,
        base_job_name=job_base,
        stopping_condition=StoppingCondition(max_runtime_in_seconds=max_run),
        training_input_mode=input_mode,
    )
    if not kwargs["training_image"]:
        raise UserError("--image-uri is needed for SageMaker jobs (the ECR URI scripts/build_push.sh printed).")
    if target.local:
        kwargs.update(
            training_mode=Mode.LOCAL_CONTAINER,
            compute=Compute(instance_type=instance_type or "local_cpu", instance_count=instance_count),
            local_container_root=str(Path(local_container_root or target.workdir or ".").resolve()),
            role=target.role,
        )
    else:
        import boto3
        from sagemaker.core.helper.session_helper import Session
        from sagemaker.train.configs import CheckpointConfig

        kwargs.update(
            training_mode=Mode.SAGEMAKER_TRAINING_JOB,
            compute=Compute(instance_type=instance_type or "ml.m5.xlarge", instance_count=instance_count),
            role=target.role,
            sagemaker_session=Session(boto_session=boto3.Session(region_name=target.region)),
            output_data_config=OutputDataConfig(s3_output_path=target.output_path("training")),
            # ModelTrainer names the job itself (base + timestamp); a unique base of our own gives each job its own
            # checkpoint prefix (jobs.checkpoint_uri), so no job resumes another's run.
            checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri(target.bucket, target.prefix, job_base)),
        )
    trainer = ModelTrainer(**kwargs)
    # Console metrics on SageMaker; ignored in local mode (the lines are still in the logs).
    return trainer.with_metric_definitions(
        [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in METRIC_DEFINITIONS]
    )


def deploy_v3(
    sagemaker_client,
    *,
    name: str,
    image_uri: str,
    model_data: str,
    role: str,
    instance_type: str | None = None,
    instance_count: int = 1,
    environment: Mapping[str, str] | None = None,
    endpoint_config: dict | None = None,
) -> str:
    """Endpoint through the CreateModel/CreateEndpointConfig/CreateEndpoint API (SDK v3 or boto3).

    `sagemaker_client` is `sagemaker.core.local.LocalSession().sagemaker_client` in local mode (file://
    model data) or a boto3 `sagemaker` client on SageMaker; invoke it with the matching runtime client's
    `invoke_endpoint(EndpointName=name, ContentType="image/jpeg", Body=...)`. `endpoint_config` is a
    CreateEndpointConfig request from `imgclf.sagemaker.endpoints.endpoint_config_request(name, name, ...)`
    (serverless, async, data capture); without one, one variant of `instance_count` x `instance_type`.
    Returns without waiting for InService (boto3: the `endpoint_in_service` waiter).
    """
    from imgclf.sagemaker import endpoints
    from imgclf.sagemaker.aws_errors import aws_call

    request = endpoint_config or endpoints.endpoint_config_request(
        name, name, instance_type=instance_type, instance_count=instance_count
    )
    if any(variant["ModelName"] != name for variant in request["ProductionVariants"]):
        raise ValueError(f"the endpoint config's variants must serve model {name!r}")
    aws_call(
        f"CreateModel {name}",
        sagemaker_client.create_model,
        ModelName=name,
        ExecutionRoleArn=role,
        PrimaryContainer={"Image": image_uri, "ModelDataUrl": model_data, "Environment": dict(environment or {})},
    )
    endpoints.create_endpoint_config(sagemaker_client, {**request, "EndpointConfigName": name})
    aws_call(f"CreateEndpoint {name}", sagemaker_client.create_endpoint, EndpointName=name, EndpointConfigName=name)
    return name
