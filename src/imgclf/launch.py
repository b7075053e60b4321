"""`imgclf sagemaker train|tune|deploy|transform`: SageMaker jobs, endpoints and batch transform for our images.

Every SDK object is built here from the one hyperparameter spec (`imgclf.hyperparameters.SPEC`: values, tuning
ranges) and the trainer's metric regexes (`imgclf.metrics.METRIC_DEFINITIONS`), so a job, a tuner and the local
trainer can never disagree about names or ranges.

Two layers:
  * plain data (no SDK needed, unit-tested in the main venv): `job_hyperparameters`, `tuning_ranges`,
    `objective`, `DEBUGGER_RULES` / `PROFILER_RULES`, `debugger_collections`, `resolve_target`, `channels`;
  * SDK builders (the `sagemaker` package, imported lazily: it is not a dependency of imgclf):
    SDK v2 (`sagemaker<3`, the seeds' API): `build_estimator`, `build_tuner`, `build_model`, `deploy`,
    `build_transformer`; SDK v3 (`sagemaker>=3`): `build_model_trainer` (ModelTrainer) and `deploy_v3`
    (the CreateModel / CreateEndpoint API on a v3 `Session` or `LocalSession` client).

`--local` runs the same objects in SageMaker local mode (Docker, file:// data, no AWS account needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf import hyperparameters as hp_spec
from imgclf.diagnostics import DEBUGGER_RULES, PROFILER_RULES
from imgclf.errors import UserError
from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVES

log = logging.getLogger(__name__)

DEFAULT_TRAIN_IMAGE = "imgclf-train:latest"
DEFAULT_SERVE_IMAGE = "imgclf-serve:latest"
DEFAULT_PREFIX = "imgclf"
ROLE_ENV = "IMGCLF_SAGEMAKER_ROLE"
BUCKET_ENV = "IMGCLF_SAGEMAKER_BUCKET"
# Local mode never calls IAM; the SDK still insists on a role string.
LOCAL_ROLE = "arn:aws:iam::111111111111:role/imgclf-local-mode"

PROFILER_INTERVAL_MS = 500

JPEG = "image/jpeg"
JSON = "application/json"

SDK_HINT = (
    "The SageMaker Python SDK is not installed in this Python ({exe}). It is not a dependency of imgclf: "
    "install it next to imgclf with `pip install 'sagemaker>=2.257,<3' 'protobuf==3.20.3' 'numpy<2'` "
    "(or run `bash scripts/sdk_venvs.sh` and use .venv-sdk2/bin/imgclf)."
)


# ---------------------------------------------------------------------------------------------------------------
# Plain data: no SDK needed.


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
    return [dict(d) for d in METRIC_DEFINITIONS]


def debugger_collections(given: Mapping[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """Collections for DebuggerHookConfig from the debug-* hyperparameters (same defaults as local runs)."""
    hp = hp_spec.Hyperparameters.from_mapping(dict(given or {}))
    params = {"train.save_interval": str(hp.debug_train_interval), "eval.save_interval": str(hp.debug_eval_interval)}
    names = [c.strip() for c in str(hp.debug_collections).split(",") if c.strip()]
    return {name: dict(params) for name in names}


def file_uri(path: str | os.PathLike) -> str:
    return "file://" + str(Path(path).resolve())


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


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
            out = {name: f"{base}/{name}/" for name in ("train", "valid", "test")}
        else:
            root = Path(data)
            if not root.is_dir():
                raise UserError(f"--data {data} is not a directory (nor an s3:// prefix).")
            if not (root / "train").is_dir():
                raise UserError(f"--data {data} has no train/ folder (ImageFolder layout: train/<class>/<images>).")
            out = {name: str(root / name) for name in ("train", "valid", "test") if (root / name).is_dir()}
    for name, value in (("train", train), ("valid", valid), ("test", test)):
        if value:
            out[name] = value
    if "train" not in out:
        raise UserError("No training data: pass --data DIR_OR_S3_PREFIX (with train/ inside) or --train.")
    for name, value in out.items():
        if not is_remote(value) and not value.startswith("file://") and not Path(value).is_dir():
            raise UserError(f"Channel {name}: {value} is not a directory.")
    return out


@dataclass(frozen=True)
class Target:
    """Where jobs run: SageMaker (role, bucket, region) or local mode (a folder for file:// outputs)."""

    local: bool
    region: str
    role: str
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    workdir: Path | None = None

    def output_path(self, kind: str) -> str:
        if self.local:
            path = (self.workdir or Path("sagemaker-local")) / kind
            path.mkdir(parents=True, exist_ok=True)
            return file_uri(path)
        return f"s3://{self.bucket}/{self.prefix}/{kind}"


def resolve_target(
    *,
    local: bool,
    role: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    workdir: str | os.PathLike | None = None,
    action: str = "this command",
    check_credentials: bool = True,
) -> Target:
    """Check that a real SageMaker call has what it needs (role, bucket, region, credentials) before any call.

    Raises UserError naming everything that is missing at once and how to supply it.
    """
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if local:
        return Target(
            local=True,
            region=region or "us-east-1",
            role=role or LOCAL_ROLE,
            bucket=bucket,
            prefix=prefix,
            workdir=Path(workdir) if workdir else Path("sagemaker-local"),
        )
    role = role or os.environ.get(ROLE_ENV)
    bucket = bucket or os.environ.get(BUCKET_ENV)
    boto_session = None
    if region is None or check_credentials:
        import boto3

        boto_session = boto3.Session(region_name=region)
        region = region or boto_session.region_name
    missing = []
    if not role:
        missing.append(
            f"an IAM execution role SageMaker can assume (--role arn:aws:iam::ACCOUNT:role/NAME or {ROLE_ENV}); "
            "it needs AmazonSageMakerFullAccess and read/write on the bucket"
        )
    elif not (role.startswith("arn:aws") and ":role/" in role):
        missing.append(f"a role ARN (arn:aws:iam::ACCOUNT:role/NAME), not {role!r}")
    if not bucket:
        missing.append(f"an S3 bucket for data, checkpoints and outputs (--bucket NAME or {BUCKET_ENV})")
    if not region:
        missing.append("an AWS region (--region or AWS_DEFAULT_REGION)")
    if check_credentials and boto_session is not None:
        creds_hint = "AWS credentials (`aws configure`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        try:
            if boto_session.get_credentials() is None:
                missing.append(creds_hint)
        except Exception as exc:  # botocore: a configured provider that fails (SSO expired, metadata denied)
            missing.append(f"{creds_hint}; looking them up failed: {exc}")
    if missing:
        raise UserError(
            f"{action} calls SageMaker in your AWS account and needs: "
            + "; ".join(missing)
            + ". To try it on this machine without AWS, add --local (SageMaker local mode, Docker)."
        )
    return Target(local=False, region=region, role=role, bucket=bucket.removeprefix("s3://").strip("/"), prefix=prefix)


# ---------------------------------------------------------------------------------------------------------------
# SDK builders.


def sdk_major() -> int:
    """Major version of the installed SageMaker SDK (2 or 3); UserError when it is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        v = version("sagemaker")
    except PackageNotFoundError:
        raise UserError(SDK_HINT.format(exe=sys.executable)) from None
    return int(v.split(".")[0])


def _require_v2(what: str) -> None:
    major = sdk_major()
    if major != 2:
        raise UserError(
            f"{what} uses the SageMaker SDK v2 API (Estimator/HyperparameterTuner/Model), found SDK {major}. "
            "Install `sagemaker>=2.257,<3` (scripts/sdk_venvs.sh makes .venv-sdk2); with SDK v3 use "
            "`imgclf sagemaker train` (ModelTrainer) or launch.deploy_v3."
        )


def local_serving_port() -> int:
    """Host port for local endpoints: IMGCLF_LOCAL_SERVING_PORT, else a free one (the SDK's 8080 is often taken)."""
    if os.environ.get("IMGCLF_LOCAL_SERVING_PORT"):
        return int(os.environ["IMGCLF_LOCAL_SERVING_PORT"])
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_config(target: Target) -> dict[str, Any]:
    """`LocalSession.config["local"]` (v2 and v3): the SDK's per-job folders (config, model, compose file)
    under the workdir instead of /tmp, and a free host port for endpoints."""
    root = (target.workdir or Path("sagemaker-local")) / "containers"
    root.mkdir(parents=True, exist_ok=True)
    return {"local_code": True, "container_root": str(root.resolve()), "serving_port": local_serving_port()}


def session(target: Target):
    """A v2 `Session` for SageMaker or a `LocalSession` for local mode (SDK v2)."""
    _require_v2("This command")
    import boto3

    boto_session = boto3.Session(region_name=target.region)
    if target.local:
        from sagemaker.local import LocalSession

        sess = LocalSession(boto_session=boto_session)
        sess.config = {"local": local_config(target)}
        return sess
    from sagemaker.session import Session

    return Session(boto_session=boto_session, default_bucket=target.bucket)


def _debugger_objects(given: Mapping[str, Any], output_path: str):
    from sagemaker.debugger import (
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    hook = DebuggerHookConfig(
        s3_output_path=f"{output_path}/debugger",
        collection_configs=[
            CollectionConfig(name=name, parameters=params) for name, params in debugger_collections(given).items()
        ],
    )
    ours = {c.name: c for c in hook.collection_configs}
    rules = []
    for name in DEBUGGER_RULES:
        base = getattr(rule_configs, name)()
        # A rule's own collection ("losses" every 500 steps) would sit beside ours under the same name in the
        # request; use our save intervals for those, the rule's defaults for the rest (gradients, weights...).
        collections = [
            ours.get(c["CollectionName"], CollectionConfig(c["CollectionName"], c.get("CollectionParameters")))
            for c in base.get("CollectionConfigurations", [])
        ]
        rules.append(Rule.sagemaker(base, collections_to_save=collections or None))
    rules += [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in PROFILER_RULES]
    profiler = ProfilerConfig(
        s3_output_path=f"{output_path}/profiler", system_monitor_interval_millis=PROFILER_INTERVAL_MS
    )
    return hook, rules, profiler


def build_estimator(
    target: Target,
    *,
    image_uri: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    instance_type: str | None = None,
    instance_count: int = 1,
    spot: bool = False,
    max_run: int = 3600,
    max_wait: int | None = None,
    checkpoint_s3_uri: str | None = None,
    debugger: bool = True,
    volume_size: int = 30,
    environment: Mapping[str, str] | None = None,
    sagemaker_session=None,
    base_job_name: str = "imgclf",
):
    """SDK v2 Estimator for the train image (BYOC), with Debugger rules + profiler on SageMaker.

    Local mode runs without Debugger rules/profiler (they are SageMaker processing jobs) and without
    spot/checkpoint sync (the SDK rejects them there); `imgclf train --debugger-out` + `imgclf report` cover
    the same locally.
    """
    _require_v2("The Estimator")
    from sagemaker.estimator import Estimator

    given = dict(hyperparameters or {})
    sess = sagemaker_session or session(target)
    output_path = target.output_path("training")
    kwargs: dict[str, Any] = dict(
        image_uri=image_uri or (DEFAULT_TRAIN_IMAGE if target.local else None),
        role=target.role,
        instance_count=instance_count,
        instance_type=instance_type or ("local" if target.local else "ml.m5.xlarge"),
        hyperparameters=job_hyperparameters(given),
        metric_definitions=metric_definitions(),
        output_path=output_path,
        base_job_name=base_job_name,
        sagemaker_session=sess,
        max_run=max_run,
        volume_size=volume_size,
        environment=dict(environment or {}),
    )
    if not kwargs["image_uri"]:
        raise UserError("--image-uri is needed for SageMaker jobs (the ECR URI scripts/build_push.sh printed).")
    if target.local:
        if spot or checkpoint_s3_uri:
            raise UserError("Spot training and checkpoint_s3_uri exist only on SageMaker, not in local mode.")
        kwargs.update(debugger_hook_config=False, disable_profiler=True)
        return Estimator(**kwargs)
    if spot:
        kwargs.update(use_spot_instances=True, max_wait=max_wait or 2 * max_run)
        # Spot restarts resume from /opt/ml/checkpoints, which SageMaker syncs with this URI.
        checkpoint_s3_uri = checkpoint_s3_uri or f"s3://{target.bucket}/{target.prefix}/checkpoints"
    if checkpoint_s3_uri:
        kwargs["checkpoint_s3_uri"] = checkpoint_s3_uri
    if debugger:
        hook, rules, profiler = _debugger_objects(given, output_path)
        kwargs.update(debugger_hook_config=hook, rules=rules, profiler_config=profiler)
    else:
        kwargs.update(debugger_hook_config=False, disable_profiler=True)
    return Estimator(**kwargs)


def build_tuner(
    estimator,
    *,
    objective_metric: str = "valid_accuracy",
    max_jobs: int = 4,
    max_parallel_jobs: int = 2,
    strategy: str = "Bayesian",
    base_tuning_job_name: str = "imgclf-hpo",
):
    """SDK v2 HyperparameterTuner over SPEC's ranges (the seeds': lr, batch-size, epochs)."""
    _require_v2("The HyperparameterTuner")
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

    ranges = {}
    for name, r in hp_spec.tuning_ranges().items():
        if r["type"] == "Continuous":
            ranges[name] = ContinuousParameter(r["min"], r["max"], scaling_type=r["scaling"])
        elif r["type"] == "Integer":
            ranges[name] = IntegerParameter(r["min"], r["max"], scaling_type=r["scaling"])
        else:
            ranges[name] = CategoricalParameter(r["values"])
    name, kind = objective(objective_metric)
    return HyperparameterTuner(
        estimator,
        objective_metric_name=name,
        hyperparameter_ranges=ranges,
        metric_definitions=metric_definitions(),
        objective_type=kind,
        strategy=strategy,
        max_jobs=max_jobs,
        max_parallel_jobs=max_parallel_jobs,
        base_tuning_job_name=base_tuning_job_name,
    )


def build_model(
    target: Target,
    model_data: str,
    *,
    image_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    sagemaker_session=None,
    name: str | None = None,
):
    """SDK v2 Model for the serve image; deploy() returns a Predictor (BYOC returns None without predictor_cls)."""
    _require_v2("The Model")
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor

    image_uri = image_uri or (DEFAULT_SERVE_IMAGE if target.local else None)
    if not image_uri:
        raise UserError("--image-uri is needed (the serve image's ECR URI scripts/build_push.sh printed).")
    if target.local and not (model_data.startswith("file://") or is_remote(model_data)):
        model_data = file_uri(model_data)
    if not target.local and not is_remote(model_data):
        raise UserError(f"--model-data must be an s3:// URI of a model.tar.gz on SageMaker, got {model_data!r}.")
    return Model(
        image_uri=image_uri,
        model_data=model_data,
        role=target.role,
        env=dict(env or {}),
        predictor_cls=Predictor,
        sagemaker_session=sagemaker_session or session(target),
        name=name,
    )


def deploy(model, *, instance_type: str, instance_count: int = 1, endpoint_name: str | None = None):
    """Endpoint answering image/jpeg with JSON (the seeds' IdentitySerializer / JSONDeserializer)."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import IdentitySerializer

    return model.deploy(
        initial_instance_count=instance_count,
        instance_type=instance_type,
        serializer=IdentitySerializer(JPEG),
        deserializer=JSONDeserializer(),
        endpoint_name=endpoint_name,
    )


def build_transformer(
    model,
    *,
    instance_type: str,
    output_path: str,
    instance_count: int = 1,
    max_payload_mb: int = 6,
):
    """Batch transform: one request per image file (SingleRecord), JSON out as <file>.out."""
    return model.transformer(
        instance_count=instance_count,
        instance_type=instance_type,
        strategy="SingleRecord",
        output_path=output_path,
        accept=JSON,
        max_payload=max_payload_mb,
    )


def run_transform(transformer, data: str, *, local: bool, content_type: str = JPEG, wait: bool = True) -> None:
    """Start the batch transform; one request per file. Local mode: no log streaming (the SDK would call
    CloudWatch Logs, which local mode does not fake; the container's output is printed anyway)."""
    transformer.transform(data, content_type=content_type, split_type=None, wait=wait, logs=not local)


# --- SDK v3 -----------------------------------------------------------------------------------------------------


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
):
    """SDK v3 ModelTrainer for the train image (Mode.LOCAL_CONTAINER with --local).

    v3 runs the image without the `train` argument; our image defaults to training for that reason.
    """
    major = sdk_major()
    if major < 3:
        raise UserError(f"ModelTrainer needs SageMaker SDK v3 (`sagemaker>=3`), found SDK {major}.")
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig, StoppingCondition
    from sagemaker.train.model_trainer import Mode

    inputs = [
        InputData(channel_name=name, data_source=value if is_remote(value) else str(Path(value).resolve()))
        for name, value in data.items()
    ]
    kwargs: dict[str, Any] = dict(
        training_image=image_uri or (DEFAULT_TRAIN_IMAGE if target.local else None),
        hyperparameters=job_hyperparameters(hyperparameters),
        input_data_config=inputs,
        base_job_name=base_job_name,
        stopping_condition=StoppingCondition(max_runtime_in_seconds=max_run),
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
            checkpoint_config=CheckpointConfig(s3_uri=f"s3://{target.bucket}/{target.prefix}/checkpoints"),
        )
    from sagemaker.train.configs import MetricDefinition

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
    instance_type: str,
    instance_count: int = 1,
) -> str:
    """Endpoint through the CreateModel/CreateEndpointConfig/CreateEndpoint API (SDK v3 or boto3).

    `sagemaker_client` is `sagemaker.core.local.LocalSession().sagemaker_client` in local mode (file://
    model data) or a boto3 `sagemaker` client on SageMaker; invoke it with the matching runtime client's
    `invoke_endpoint(EndpointName=name, ContentType="image/jpeg", Body=...)`.
    """
    sagemaker_client.create_model(
        ModelName=name,
        ExecutionRoleArn=role,
        PrimaryContainer={"Image": image_uri, "ModelDataUrl": model_data, "Environment": {}},
    )
    sagemaker_client.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
            }
        ],
    )
    sagemaker_client.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


# ---------------------------------------------------------------------------------------------------------------
# CLI.


def _common(parser: argparse.ArgumentParser, *, training: bool) -> None:
    where = parser.add_argument_group("where it runs")
    where.add_argument(
        "--local", action="store_true", help="SageMaker local mode: Docker on this machine, file:// data."
    )
    where.add_argument("--role", help=f"IAM execution role ARN (default: ${ROLE_ENV}).")
    where.add_argument("--bucket", help=f"S3 bucket for data and outputs (default: ${BUCKET_ENV}).")
    where.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION / your AWS config).")
    where.add_argument("--prefix", default=DEFAULT_PREFIX, help="S3 key prefix (default: %(default)s).")
    where.add_argument(
        "--workdir",
        default="sagemaker-local",
        help="Local mode: folder for file:// outputs (default: %(default)s).",
    )
    where.add_argument(
        "--image-uri",
        help=f"Image to run (default in local mode: {DEFAULT_TRAIN_IMAGE if training else DEFAULT_SERVE_IMAGE}).",
    )
    where.add_argument("--instance-type", help="Default: ml.m5.xlarge (train) / ml.m5.large (serve); local: 'local'.")
    where.add_argument("--instance-count", type=int, default=1)


def _training_args(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="Folder or s3:// prefix with train/ (valid/, test/) inside.")
    data.add_argument("--train", help="Train channel (folder or s3:// URI); overrides DATA/train.")
    data.add_argument("--valid", help="Valid channel.")
    data.add_argument("--test", help="Test channel.")
    job = parser.add_argument_group("job")
    job.add_argument("--spot", action="store_true", help="Managed spot training (resumes from checkpoints).")
    job.add_argument(
        "--checkpoint-s3-uri", help="Checkpoint sync URI (default with --spot: s3://BUCKET/PREFIX/checkpoints)."
    )
    job.add_argument("--max-run", type=int, default=3600, help="Seconds before SageMaker stops the job.")
    job.add_argument("--max-wait", type=int, help="Spot: seconds to wait for capacity + run (default 2 x max-run).")
    job.add_argument(
        "--no-debugger", dest="debugger", action="store_false", help="No Debugger hook, rules or profiler."
    )
    job.add_argument("--no-wait", dest="wait", action="store_false", help="Start the job and return.")
    hp_spec.add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = sub.add_parser("train", help="Training job (Estimator; ModelTrainer with SDK v3).")
    _common(train, training=True)
    _training_args(train)

    tune = sub.add_parser("tune", help="Hyperparameter tuning job over the spec's ranges.")
    _common(tune, training=True)
    _training_args(tune)
    tune.add_argument("--objective", default="valid_accuracy", choices=sorted(OBJECTIVES))
    tune.add_argument("--max-jobs", type=int, default=4)
    tune.add_argument("--max-parallel-jobs", type=int, default=2)
    tune.add_argument("--strategy", default="Bayesian", choices=("Bayesian", "Random", "Hyperband", "Grid"))
    tune.add_argument(
        "--print-only",
        action="store_true",
        help="Print the CreateHyperParameterTuningJob request the SDK would send, and stop.",
    )

    dep = sub.add_parser("deploy", help="Real-time endpoint from a model.tar.gz.")
    _common(dep, training=False)
    dep.add_argument("--model-data", required=True, help="model.tar.gz: s3:// URI (local mode: a file path).")
    dep.add_argument("--endpoint-name", help="Default: generated.")
    dep.add_argument("--predict", nargs="*", default=[], metavar="JPEG", help="Images to classify once it is up.")
    dep.add_argument("--delete", action="store_true", help="Delete the endpoint at the end (always in local mode).")

    tr = sub.add_parser("transform", help="Batch transform over a folder / S3 prefix of images.")
    _common(tr, training=False)
    tr.add_argument("--model-data", required=True, help="model.tar.gz: s3:// URI (local mode: a file path).")
    tr.add_argument("--input", required=True, help="Folder (local mode) or s3:// prefix of images.")
    tr.add_argument("--output", help="Where <image>.out JSON files go (default: under the bucket / workdir).")
    tr.add_argument("--content-type", default=JPEG, help="Content type of the input files (default: %(default)s).")
    tr.add_argument("--no-wait", dest="wait", action="store_false")


def _target(args: argparse.Namespace) -> Target:
    return resolve_target(
        local=args.local,
        role=args.role,
        bucket=args.bucket,
        region=args.region,
        prefix=args.prefix,
        workdir=args.workdir,
        action=f"imgclf sagemaker {args.action}",
    )


def _given_hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    return hp_spec.given_arguments(args)


def _inputs(args: argparse.Namespace, target: Target, sess) -> dict[str, str]:
    chans = channels(args.data, args.train, args.valid, args.test)
    out = {}
    for name, value in chans.items():
        if is_remote(value) or value.startswith("file://"):
            out[name] = value
        elif target.local:
            out[name] = file_uri(value)
        else:
            log.info("Uploading %s to s3://%s/%s/data/%s", value, target.bucket, target.prefix, name)
            out[name] = sess.upload_data(value, bucket=target.bucket, key_prefix=f"{target.prefix}/data/{name}")
    return out


def _estimator_from_args(args: argparse.Namespace, target: Target, hyperparameters: dict, sess):
    """The training-job options `imgclf sagemaker train` and `tune` share."""
    return build_estimator(
        target,
        image_uri=args.image_uri,
        hyperparameters=hyperparameters,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        spot=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        debugger=args.debugger,
        sagemaker_session=sess,
    )


def _run_train(args: argparse.Namespace, target: Target) -> int:
    given = _given_hyperparameters(args)
    if sdk_major() >= 3:
        trainer = build_model_trainer(
            target,
            data=channels(args.data, args.train, args.valid, args.test),
            image_uri=args.image_uri,
            hyperparameters=given,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            max_run=args.max_run,
        )
        trainer.train(wait=args.wait)
        return 0
    sess = session(target)
    est = _estimator_from_args(args, target, given, sess)
    est.fit(_inputs(args, target, sess), wait=args.wait)
    if args.wait:
        print(f"model: {est.model_data}", flush=True)
    else:
        print(f"training job: {est.latest_training_job.name}", flush=True)
    return 0


def tuner_request(tuner, inputs: Mapping[str, str], job_name: str = "imgclf-hpo-preview") -> dict:
    """The CreateHyperParameterTuningJob request the SDK builds for this tuner (no AWS call)."""
    from sagemaker.tuner import _TuningJob

    tuner._prepare_for_tuning(job_name=job_name)
    return _TuningJob._get_tuner_args(tuner, dict(inputs))


def _run_tune(args: argparse.Namespace, target: Target) -> int:
    _require_v2("imgclf sagemaker tune")
    sess = session(target)
    est = _estimator_from_args(args, target, _given_hyperparameters(args), sess)
    tuner = build_tuner(
        est,
        objective_metric=args.objective,
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        strategy=args.strategy,
    )
    if args.print_only:
        chans = channels(args.data, args.train, args.valid, args.test)
        inputs = {k: v if is_remote(v) else file_uri(v) for k, v in chans.items()}
        print(json.dumps(tuner_request(tuner, inputs), indent=1, default=str))
        return 0
    tuner.fit(_inputs(args, target, sess), wait=args.wait)
    print(f"tuning job: {tuner.latest_tuning_job.name}", flush=True)
    if args.wait:
        print(f"best training job: {tuner.best_training_job()}", flush=True)
    return 0


def _run_deploy(args: argparse.Namespace, target: Target) -> int:
    model = build_model(target, args.model_data, image_uri=args.image_uri)
    instance_type = args.instance_type or ("local" if target.local else "ml.m5.large")
    predictor = deploy(
        model, instance_type=instance_type, instance_count=args.instance_count, endpoint_name=args.endpoint_name
    )
    print(f"endpoint: {predictor.endpoint_name}", flush=True)
    try:
        for image in args.predict:
            print(json.dumps({"image": image, "prediction": predictor.predict(Path(image).read_bytes())}), flush=True)
    finally:
        if target.local or args.delete:
            started = time.monotonic()
            predictor.delete_endpoint()
            print(f"endpoint deleted ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


def _run_transform(args: argparse.Namespace, target: Target) -> int:
    model = build_model(target, args.model_data, image_uri=args.image_uri)
    instance_type = args.instance_type or ("local" if target.local else "ml.m5.large")
    if target.local:
        data = args.input if args.input.startswith("file://") else file_uri(args.input)
        output = file_uri(args.output) if args.output else target.output_path("transform")
    else:
        if not is_remote(args.input):
            raise UserError(f"--input must be an s3:// prefix on SageMaker, got {args.input!r}.")
        data, output = args.input, args.output or target.output_path("transform")
    transformer = build_transformer(
        model, instance_type=instance_type, output_path=output, instance_count=args.instance_count
    )
    run_transform(transformer, data, local=target.local, content_type=args.content_type, wait=args.wait)
    print(f"outputs: {output}", flush=True)
    return 0


TELEMETRY_OPT_OUT = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def prepare_local_env(workdir: str | os.PathLike) -> None:
    """Local mode offline: telemetry off, a region, and placeholder keys when none are configured.

    Local mode makes no AWS call with file:// data, but the SDK builds boto3 clients (region needed) and sends
    telemetry unless told not to. Settings the user made are kept.
    """
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        config = root / "sagemaker-config.yaml"
        config.write_text(TELEMETRY_OPT_OUT)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config.resolve())
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    import boto3

    try:
        has_credentials = boto3.Session().get_credentials() is not None
    except Exception:
        has_credentials = False
    if not has_credentials:
        os.environ["AWS_ACCESS_KEY_ID"] = "local-mode-placeholder"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local-mode-placeholder"


def run(args: argparse.Namespace) -> int:
    if args.action == "tune" and args.local and not args.print_only:
        raise UserError(
            "SageMaker local mode cannot run tuning jobs. Search the same space on this machine with "
            "`imgclf tune`, or print the tuner's request with `imgclf sagemaker tune --local --print-only`."
        )
    target = _target(args)
    sdk_major()  # a clear error before anything else when the SDK is missing
    if target.local:
        prepare_local_env(target.workdir)
    action = {"train": _run_train, "tune": _run_tune, "deploy": _run_deploy, "transform": _run_transform}
    return action[args.action](args, target)
