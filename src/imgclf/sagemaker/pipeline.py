"""SageMaker Pipelines (SDK v2): train -> evaluate -> quality gate -> register (or fail), from one spec.

    Train (TrainingStep: the train image, metric definitions, Debugger rules on SageMaker)
      -> Evaluate (ProcessingStep: `imgclf evaluate` in the train image, evaluation.json as a PropertyFile)
      -> QualityGate (ConditionStep: JsonGet(evaluation.json, <metric>.value) >= QualityThreshold)
           if:   Register (RegisterModel into a Model Package Group: serve image, content types, instance types,
                 evaluation.json as ModelMetrics, approval PendingManualApproval by default)
                 [+ CreateModel (a SageMaker Model of the serve image) with `create_model=True`]
           else: QualityGateFailed (FailStep: the metric, its value and the threshold)

Every input is a pipeline parameter (channel URIs, instance types, the threshold, the approval status, and every
hyperparameter of imgclf.hyperparameters.SPEC as a string, the form the container reads); the defaults are what
was given when the pipeline was built. Training and evaluation are cached (`cache_for`) while their arguments
do not change.

SageMaker local mode (`LocalPipelineSession`, sagemaker/local/pipeline.py in SDK 2.257) runs Training,
Processing, Condition, Fail, CreateModel and Transform steps; it has no executor for RegisterModel (nor Tuning,
Lambda, Callback, QualityCheck/ClarifyCheck, EMR, AutoML), so `local=True` puts a CreateModel step where
registration would be. Local pipelines read the property file with JsonGet from S3 (`read_s3_file`, s3:// only),
so the evaluation output goes to an s3:// URI even locally: a real bucket, or an S3-compatible endpoint
(`s3_endpoint_url`, e.g. moto_server or MinIO) as the local-mode tests do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imgclf import hyperparameters as hp_spec
from imgclf.errors import UserError
from imgclf.processing_contract import (
    EVALUATION_FILE,
    MODEL_INPUT,
    MODEL_INPUT_NAME,
    OUTPUT,
    OUTPUT_NAME,
    TEST_INPUT,
    TEST_INPUT_NAME,
    gate_json_path,
)
from imgclf.sagemaker.jobs import DEFAULT_SERVE_IMAGE, DEFAULT_TRAIN_IMAGE, JPEG, JSON
from imgclf.sagemaker.sdk_v2 import build_estimator, require_v2
from imgclf.sagemaker.target import Target

# The image's ENTRYPOINT (Dockerfile.train): local mode's processing containers need it spelled out.
IMAGE_ENTRYPOINT = ["/usr/bin/tini", "--", "/usr/local/bin/imgclf-entrypoint"]

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CONTENT_TYPES = (JPEG, "image/png", "application/x-image", "application/x-npy", JSON)
RESPONSE_TYPES = (JSON,)

# Step names (the definition's DAG; the README's diagram and the tests use them).
TRAIN, EVALUATE, GATE, REGISTER, CREATE_MODEL, FAIL = (
    "Train",
    "Evaluate",
    "QualityGate",
    "Register",
    "CreateModel",
    "QualityGateFailed",
)
PROPERTY_FILE = "EvaluationReport"


@dataclass
class PipelineOptions:
    """What `build_pipeline` is built from; each value is a parameter's default unless noted (build-time)."""

    name: str = "imgclf"
    channels: Mapping[str, str] = field(default_factory=dict)  # train (valid) test: s3:// or file:// URIs
    output_uri: str = ""  # s3://bucket/prefix: model.tar.gz, evaluation.json (build-time)
    train_image: str = DEFAULT_TRAIN_IMAGE  # build-time
    serve_image: str = DEFAULT_SERVE_IMAGE  # build-time
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    train_instance_type: str = "ml.m5.xlarge"
    train_instance_count: int = 1
    eval_instance_type: str = "ml.m5.large"
    gate_metric: str = "accuracy"  # build-time (the JsonGet path)
    threshold: float = 0.8
    model_package_group: str = "imgclf"  # build-time
    approval_status: str = "PendingManualApproval"
    inference_instances: Sequence[str] = ("ml.m5.large", "ml.m5.xlarge", "ml.g4dn.xlarge")  # build-time
    transform_instances: Sequence[str] = ("ml.m5.large",)  # build-time
    create_model: bool = False  # build-time: a CreateModel step after registration
    debugger: bool = True  # build-time (SageMaker only)
    cache_for: str | None = "P30D"  # build-time: ISO 8601 duration; None: no caching
    max_run: int = 3600


def pipeline_session(target: Target, s3_endpoint_url: str | None = None):
    """PipelineSession (SageMaker) or LocalPipelineSession (local mode, optionally against an S3-compatible
    endpoint); steps built with it return step arguments instead of starting jobs."""
    require_v2("SageMaker Pipelines")
    import boto3

    boto_session = boto3.Session(region_name=target.region)
    if target.local:
        from sagemaker.workflow.pipeline_context import LocalPipelineSession

        from imgclf.sagemaker.target import local_config

        sess = LocalPipelineSession(
            boto_session=boto_session, default_bucket=target.bucket, s3_endpoint_url=s3_endpoint_url
        )
        sess.config = {"local": local_config(target)}
        return sess
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto_session, default_bucket=target.bucket)


def _parameters(opts: PipelineOptions, local: bool) -> dict[str, Any]:
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    if "train" not in opts.channels or "test" not in opts.channels:
        raise UserError("A pipeline needs a train and a test channel (the evaluation step reads test).")
    params: dict[str, Any] = {
        f"{name}_data": ParameterString(f"{name.capitalize()}Data", default_value=uri)
        for name, uri in opts.channels.items()
    }
    params.update(
        train_instance_type=ParameterString(
            "TrainInstanceType", default_value="local" if local else opts.train_instance_type
        ),
        train_instance_count=ParameterInteger("TrainInstanceCount", default_value=opts.train_instance_count),
        eval_instance_type=ParameterString(
            "EvaluationInstanceType", default_value="local" if local else opts.eval_instance_type
        ),
        threshold=ParameterFloat("QualityThreshold", default_value=float(opts.threshold)),
        approval_status=ParameterString(
            "ModelApprovalStatus", default_value=opts.approval_status, enum_values=list(APPROVAL_STATUSES)
        ),
    )
    # Every hyperparameter, as the string SageMaker hands the container (validated against SPEC here).
    as_strings = hp_spec.Hyperparameters.from_mapping(dict(opts.hyperparameters)).to_sagemaker()
    params["hyperparameters"] = {
        p.name: ParameterString(p.name, default_value=as_strings[p.name]) for p in hp_spec.SPEC
    }
    return params


def build_pipeline(target: Target, opts: PipelineOptions, sagemaker_session=None):
    """The Pipeline object (upsert/start/definition() are the SDK's). `target.local`: the local-mode variant."""
    require_v2("SageMaker Pipelines")
    from sagemaker.inputs import TrainingInput
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TrainingStep

    if not opts.output_uri.startswith("s3://"):
        raise UserError(
            "Pipelines keep their outputs in S3 (the quality gate reads evaluation.json from there, in local mode "
            f"too): give a bucket (or an s3:// output URI); got {opts.output_uri or 'none'!r}."
        )
    json_path = gate_json_path(opts.gate_metric)
    sess = sagemaker_session or pipeline_session(target)
    p = _parameters(opts, target.local)
    cache = CacheConfig(enable_caching=True, expire_after=opts.cache_for) if opts.cache_for else None
    base = opts.output_uri.rstrip("/")

    estimator = build_estimator(
        target,
        image_uri=opts.train_image,
        instance_type=p["train_instance_type"],
        instance_count=p["train_instance_count"],
        debugger=opts.debugger and not target.local,
        max_run=opts.max_run,
        sagemaker_session=sess,
        base_job_name=f"{opts.name}-train",
    )
    estimator.output_path = f"{base}/training"
    estimator.set_hyperparameters(**p["hyperparameters"])
    inputs = {name: TrainingInput(p[f"{name}_data"]) for name in ("train", "valid", "test") if f"{name}_data" in p}
    train = TrainingStep(name=TRAIN, step_args=estimator.fit(inputs), cache_config=cache)
    model_data = train.properties.ModelArtifacts.S3ModelArtifacts

    evaluation_uri = Join(on="/", values=[f"{base}/evaluation", ExecutionVariables.PIPELINE_EXECUTION_ID])
    processor = Processor(
        role=target.role,
        image_uri=opts.train_image,
        entrypoint=IMAGE_ENTRYPOINT,
        instance_count=1,
        instance_type=p["eval_instance_type"],
        sagemaker_session=sess,
        base_job_name=f"{opts.name}-evaluate",
    )
    report = PropertyFile(name=PROPERTY_FILE, output_name=OUTPUT_NAME, path=EVALUATION_FILE)
    evaluate = ProcessingStep(
        name=EVALUATE,
        step_args=processor.run(
            inputs=[
                ProcessingInput(source=model_data, destination=str(MODEL_INPUT), input_name=MODEL_INPUT_NAME),
                ProcessingInput(source=p["test_data"], destination=str(TEST_INPUT), input_name=TEST_INPUT_NAME),
            ],
            outputs=[ProcessingOutput(output_name=OUTPUT_NAME, source=str(OUTPUT), destination=evaluation_uri)],
            arguments=["evaluate"],
        ),
        property_files=[report],
        cache_config=cache,
    )
    value = JsonGet(step_name=evaluate.name, property_file=report, json_path=json_path)

    model = Model(
        image_uri=opts.serve_image,
        model_data=model_data,
        role=target.role,
        sagemaker_session=sess,
        name=None,
    )
    passed = []
    if target.local:
        passed.append(ModelStep(name=CREATE_MODEL, step_args=model.create(instance_type="local")))
    else:
        metrics = ModelMetrics(
            model_statistics=MetricsSource(
                s3_uri=Join(on="/", values=[evaluation_uri, EVALUATION_FILE]), content_type=JSON
            )
        )
        passed.append(
            ModelStep(
                name=REGISTER,
                step_args=model.register(
                    content_types=list(CONTENT_TYPES),
                    response_types=list(RESPONSE_TYPES),
                    inference_instances=list(opts.inference_instances),
                    transform_instances=list(opts.transform_instances),
                    model_package_group_name=opts.model_package_group,
                    approval_status=p["approval_status"],
                    model_metrics=metrics,
                    description=f"imgclf model from pipeline {opts.name}",
                ),
            )
        )
        if opts.create_model:
            passed.append(
                ModelStep(name=CREATE_MODEL, step_args=model.create(instance_type=opts.inference_instances[0]))
            )
    fail = FailStep(
        name=FAIL,
        error_message=Join(
            on=" ",
            values=[f"Quality gate: test {opts.gate_metric}", value, "is below the threshold", p["threshold"]],
        ),
    )
    gate = ConditionStep(
        name=GATE,
        conditions=[ConditionGreaterThanOrEqualTo(left=value, right=p["threshold"])],
        if_steps=passed,
        else_steps=[fail],
    )
    parameters = [v for k, v in p.items() if k != "hyperparameters"] + list(p["hyperparameters"].values())
    return Pipeline(name=opts.name, parameters=parameters, steps=[train, evaluate, gate], sagemaker_session=sess)


def step_names(definition: Mapping[str, Any]) -> list[str]:
    """Every step name in a definition, condition branches included (depth first)."""
    names = []

    def walk(steps):
        for step in steps:
            names.append(step["Name"])
            args = step.get("Arguments", {})
            walk(args.get("IfSteps", []))
            walk(args.get("ElseSteps", []))

    walk(definition.get("Steps", []))
    return names
