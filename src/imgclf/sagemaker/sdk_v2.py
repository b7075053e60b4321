"""SDK v2 (`sagemaker<3`, the seeds' API): Session, Estimator, HyperparameterTuner, Model, deploy, Transformer.

Every builder takes a `Target` (imgclf.sagemaker.target) and the plain data of imgclf.sagemaker.jobs; the SDK is
imported inside the functions because it is not a dependency of imgclf (`bash scripts/sdk_venvs.sh` makes
.venv-sdk2). Only public SDK names are used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from imgclf import hyperparameters as hp_spec
from imgclf.diagnostics import DEBUGGER_RULES, PROFILER_RULES
from imgclf.errors import UserError
from imgclf.sagemaker import jobs
from imgclf.sagemaker.jobs import (
    DEFAULT_SERVE_IMAGE,
    DEFAULT_TRAIN_IMAGE,
    JPEG,
    JSON,
    PROFILER_INTERVAL_MS,
    checkpoint_uri,
    debugger_collections,
    job_hyperparameters,
    metric_definitions,
    objective,
)
from imgclf.sagemaker.target import Target, file_uri, is_remote, local_config, sdk_major

log = logging.getLogger(__name__)


def require_v2(what: str) -> None:
    major = sdk_major()
    if major != 2:
        raise UserError(
            f"{what} uses the SageMaker SDK v2 API (Estimator/HyperparameterTuner/Model), found SDK {major}. "
            "Install `sagemaker>=2.257,<3` (scripts/sdk_venvs.sh makes .venv-sdk2); with SDK v3 use "
            "`imgclf sagemaker train` (ModelTrainer) or imgclf.sagemaker.sdk_v3.deploy_v3."
        )


def session(target: Target):
    """A v2 `Session` for SageMaker or a `LocalSession` for local mode."""
    require_v2("This command")
    import boto3

    boto_session = boto3.Session(region_name=target.region)
    if target.local:
        from sagemaker.local import LocalSession

        sess = LocalSession(boto_session=boto_session)
        sess.config = {"local": local_config(target)}
        return sess
    from sagemaker.session import Session

    return Session(boto_session=boto_session, default_bucket=target.bucket)


def channel_inputs(
    chans: Mapping[str, str], target: Target, sess, *, input_mode: str = "File", distribution: str = "replicated"
) -> dict[str, Any]:
    """`fit()` inputs from `jobs.channels`: URIs as they are, local folders as file:// (local mode) or uploaded
    to s3://BUCKET/PREFIX/data/<channel>/ (SageMaker). A `TrainingInput` where the input mode or the distribution
    across hosts is not the default (`jobs.channel_distributions` checks them)."""
    kinds = jobs.channel_distributions(chans, input_mode=input_mode, distribution=distribution, local=target.local)
    out: dict[str, Any] = {}
    for name, value in chans.items():
        if is_remote(value) or value.startswith("file://"):
            out[name] = value
        elif target.local:
            out[name] = file_uri(value)
        else:
            log.info("Uploading %s to s3://%s/%s/data/%s", value, target.bucket, target.prefix, name)
            out[name] = sess.upload_data(value, bucket=target.bucket, key_prefix=f"{target.prefix}/data/{name}")
        if input_mode != "File" or kinds[name] != "FullyReplicated":
            from sagemaker.inputs import TrainingInput

            out[name] = TrainingInput(out[name], distribution=kinds[name], input_mode=input_mode)
    return out


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
    job_name: str | None = None,
):
    """Estimator for the train image (BYOC), with Debugger rules + profiler on SageMaker.

    With --spot the default checkpoint prefix is the job's own (`jobs.checkpoint_uri`), so pass the `job_name` the
    estimator will be fitted with (`jobs.unique_job_name()`). Without one (a tuner names its own training jobs) no
    default is set: trials running side by side would otherwise share and overwrite one prefix; a spot trial then
    restarts from scratch unless `checkpoint_s3_uri` is given.

    Local mode runs without Debugger rules/profiler (they are SageMaker processing jobs) and without
    spot/checkpoint sync (the SDK rejects them there); `imgclf train --debugger-out` + `imgclf report` cover
    the same locally.
    """
    require_v2("The Estimator")
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
        # Spot restarts resume from /opt/ml/checkpoints, which SageMaker syncs with this URI: the job's own prefix.
        if not checkpoint_s3_uri and job_name:
            checkpoint_s3_uri = checkpoint_uri(target.bucket, target.prefix, job_name)
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
    """HyperparameterTuner over SPEC's ranges (`imgclf.hyperparameters.tuning_ranges()`)."""
    require_v2("The HyperparameterTuner")
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


@contextmanager
def _kept_back(sess, method: str) -> Iterator[list[dict]]:
    """While inside, `sess.<method>(**request)` records its request instead of sending it."""
    sent: list[dict] = []
    own = vars(sess).get(method)  # normally None: the method is the class's
    setattr(sess, method, lambda **request: sent.append(request))
    try:
        yield sent
    finally:
        if own is None:
            delattr(sess, method)
        else:
            setattr(sess, method, own)


def _request(sess, method: str, start: Callable[[], Any]) -> dict:
    with _kept_back(sess, method) as sent:
        start()
    assert len(sent) == 1, f"expected one {method} request, got {len(sent)}"
    return sent[0]


def tuner_request(tuner, inputs: Mapping[str, str], job_name: str = "imgclf-hpo-preview") -> dict:
    """The CreateHyperParameterTuningJob arguments the SDK builds for this tuner, without sending them.

    Through the public API (checked against sagemaker 2.257.7): `tuner.fit(wait=False)` prepares the estimator
    and the tuner as a real launch does and hands the request to `Session.create_tuning_job(**request)`, which
    is replaced by a recorder for the call, so no AWS call is made (local mode too).
    """
    sess = tuner.sagemaker_session
    return _request(sess, "create_tuning_job", lambda: tuner.fit(dict(inputs), job_name=job_name, wait=False))


def training_request(estimator, inputs: Mapping[str, str], job_name: str = "imgclf-preview") -> dict:
    """The CreateTrainingJob arguments the SDK builds for this estimator (`Session.train(**request)`), unsent."""
    sess = estimator.sagemaker_session
    return _request(sess, "train", lambda: estimator.fit(dict(inputs), job_name=job_name, wait=False))


def build_model(
    target: Target,
    model_data: str,
    *,
    image_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    sagemaker_session=None,
    name: str | None = None,
):
    """Model for the serve image; deploy() returns a Predictor (BYOC returns None without predictor_cls)."""
    require_v2("The Model")
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


def deploy(
    model,
    *,
    instance_type: str | None,
    instance_count: int = 1,
    endpoint_name: str | None = None,
    serverless=None,
    async_inference=None,
    data_capture=None,
):
    """Endpoint answering image/jpeg with JSON (the seeds' IdentitySerializer / JSONDeserializer); Serverless,
    Asynchronous Inference and data capture as `imgclf.sagemaker.endpoints` objects (`deploy_kwargs_v2`)."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import IdentitySerializer

    from imgclf.sagemaker.endpoints import deploy_kwargs_v2

    options = deploy_kwargs_v2(
        instance_type=instance_type,
        instance_count=instance_count,
        serverless=serverless,
        async_inference=async_inference,
        data_capture=data_capture,
    )
    return model.deploy(
        **options,
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
