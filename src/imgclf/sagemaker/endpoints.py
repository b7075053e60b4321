"""Production endpoint options: autoscaling, Serverless and Asynchronous Inference, data capture, a dashboard.

Three layers, each usable without the next (torch-free; boto3 and the SageMaker SDK are imported lazily):

  * plain data: `Serverless`, `AsyncInference`, `DataCapture` (parsed from the CLI's strings, checked with a
    `UserError` that says what to change) and the exact request they become, `endpoint_config_request`
    (CreateEndpointConfig: ProductionVariants[].ServerlessConfig, AsyncInferenceConfig, DataCaptureConfig).
    The unit tests validate every request dict against botocore's service model.
  * SDK v2 objects for `Model.deploy(**deploy_kwargs_v2(...))`: `sagemaker.serverless.ServerlessInferenceConfig`,
    `sagemaker.async_inference.AsyncInferenceConfig`, `sagemaker.model_monitor.DataCaptureConfig`.
  * the boto3 call `create_endpoint_config` (AWS errors as readable `UserError`s, aws_errors.py).

The three endpoint kinds stay in one module: they share one CreateEndpointConfig request; split apart, each would
need the others' checks (serverless refuses capture and autoscaling, async sets the payload limit).

Autoscaling (autoscaling.py) and the CloudWatch dashboard (dashboard.py) are their own modules; the flags of
`imgclf sagemaker deploy` for all of them, parsed and cross-checked, are imgclf.cli.endpoint_flags.

What SageMaker allows (checked here, before any call): Serverless memory 1024..6144 MB in 1024 MB steps, 1..200
concurrent invocations, CPU only, no data capture, 4 MB payloads; Asynchronous payloads up to 1 GB with answers
written to S3; real-time payloads 6 MB. Autoscaling tracks SageMakerVariantInvocationsPerInstance, which is
invocations per instance per MINUTE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imgclf.errors import UserError
from imgclf.sagemaker.autoscaling import DEFAULT_VARIANT
from imgclf.sagemaker.aws_errors import aws_call

# Our answers' types (serving/encoders.py), captured as text; anything else (images, .npy) is captured base64.
CAPTURE_JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines")
CAPTURE_CSV_TYPES = ("text/csv",)  # we never answer CSV; listed because SDK v2 always sends it (same request)

REALTIME_MAX_PAYLOAD_MB = 6
SERVERLESS_MAX_PAYLOAD_MB = 4
ASYNC_MAX_PAYLOAD_MB = 1024
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
DEFAULT_SERVERLESS_CONCURRENCY = 5  # the SDK's default

GPU_FAMILIES = re.compile(r"^ml\.(p\d|g\d|inf\d|trn\d|dl\d)", re.IGNORECASE)
SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


def _s3_uri(value: str | None, what: str) -> str:
    if not value or not value.startswith("s3://") or len(value.rstrip("/")) <= len("s3://"):
        raise UserError(f"{what} must be an s3://BUCKET/PREFIX URI, got {value!r}.")
    return value.rstrip("/")


# ---------------------------------------------------------------------------------------------------------------
# Serverless.


@dataclass(frozen=True)
class Serverless:
    memory_mb: int
    max_concurrency: int = DEFAULT_SERVERLESS_CONCURRENCY

    def __post_init__(self) -> None:
        if self.memory_mb not in SERVERLESS_MEMORY_MB:
            raise UserError(
                f"Serverless memory must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} MB, "
                f"got {self.memory_mb}."
            )
        if not 1 <= self.max_concurrency <= SERVERLESS_MAX_CONCURRENCY:
            raise UserError(
                f"Serverless max concurrency must be 1..{SERVERLESS_MAX_CONCURRENCY}, got {self.max_concurrency}."
            )

    def request(self) -> dict:
        """ProductionVariants[].ServerlessConfig."""
        return {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}


def parse_serverless(spec: str) -> Serverless:
    """`--serverless MEMORY_MB[:MAX_CONCURRENCY]`."""
    memory, _, concurrency = spec.partition(":")
    try:
        return Serverless(int(memory), int(concurrency) if concurrency else DEFAULT_SERVERLESS_CONCURRENCY)
    except ValueError:
        raise UserError(f"--serverless takes MEMORY_MB[:MAX_CONCURRENCY] (e.g. 3072:5), got {spec!r}.") from None


def smallest_serverless_memory(needed_mb: int) -> int | None:
    return next((m for m in SERVERLESS_MEMORY_MB if m >= needed_mb), None)


def check_serverless(
    serverless: Serverless,
    *,
    instance_type: str | None = None,
    needed_mb: int | None = None,
    max_payload_mb: int | None = None,
    data_capture: bool = False,
    autoscaling: bool = False,
) -> None:
    """Refuse what Serverless Inference cannot do, before any AWS call.

    `needed_mb` is the model's measured need (the serving side's worker estimate plus the front-end, as
    `imgclf serve` sizes its workers); `max_payload_mb` the container's SAGEMAKER_MAX_PAYLOAD_IN_MB if set.
    """
    problems = []
    if instance_type and GPU_FAMILIES.match(instance_type):
        problems.append(f"it runs on CPU only, so {instance_type} (a GPU/accelerator type) cannot be used")
    elif instance_type and instance_type != "local":
        problems.append(f"it has no instance type (drop --instance-type {instance_type})")
    if needed_mb is not None and serverless.memory_mb < needed_mb:
        fits = smallest_serverless_memory(needed_mb)
        hint = (
            f"use --serverless {fits}" if fits else "the model needs more than serverless offers: deploy on instances"
        )
        problems.append(
            f"this model needs about {needed_mb} MB (one worker plus the front-end) but "
            f"{serverless.memory_mb} MB was asked for; {hint}"
        )
    if max_payload_mb is not None and max_payload_mb > SERVERLESS_MAX_PAYLOAD_MB:
        problems.append(
            f"payloads are limited to {SERVERLESS_MAX_PAYLOAD_MB} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB={max_payload_mb}); "
            "for large images use --async-output"
        )
    if data_capture:
        problems.append("it does not support data capture (drop --data-capture or deploy on instances)")
    if autoscaling:
        problems.append("it scales by itself (drop --autoscale; MAX_CONCURRENCY is its limit)")
    if problems:
        raise UserError("Serverless Inference: " + "; ".join(problems) + ".")


def model_memory_mb(artifact_bytes: int) -> int:
    """What serving a model of this size needs, as `imgclf serve` sizes it: the front-end's reserve plus one
    worker (imgclf.serving.environment.worker_estimate_mb). The model.tar.gz holds the weights nearly
    uncompressed, so its size stands for model.pt's; the worker is taken to run torch (the image behind
    --image-uri is not known here, and the torch image's worker is the larger), so the check never lets through
    a size too small for either image."""
    from imgclf.serving.environment import FRONTEND_RESERVE_MB, worker_estimate_mb

    return FRONTEND_RESERVE_MB + worker_estimate_mb(artifact_bytes // 2**20, torch=True)


def payload_limit_mb(kind: str) -> int:
    """Request body limit of an endpoint kind: realtime, serverless or async."""
    return {"realtime": REALTIME_MAX_PAYLOAD_MB, "serverless": SERVERLESS_MAX_PAYLOAD_MB}.get(
        kind, ASYNC_MAX_PAYLOAD_MB
    )


def check_payload(nbytes: int, kind: str) -> None:
    limit = payload_limit_mb(kind)
    if nbytes > limit * 1024 * 1024:
        hint = "" if kind == "async" else " Use an asynchronous endpoint (--async-output) and `imgclf predict --async`."
        raise UserError(f"The request is {nbytes / 2**20:.1f} MB; {kind} endpoints accept at most {limit} MB.{hint}")


# ---------------------------------------------------------------------------------------------------------------
# Asynchronous inference and data capture.


@dataclass(frozen=True)
class AsyncInference:
    output_path: str
    failure_path: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_per_instance: int | None = None

    def __post_init__(self) -> None:
        _s3_uri(self.output_path, "--async-output")
        if self.failure_path is not None:
            _s3_uri(self.failure_path, "--async-failure")
        for flag, arn in (("--async-success-topic", self.success_topic), ("--async-error-topic", self.error_topic)):
            if arn is not None and not SNS_ARN.match(arn):
                raise UserError(f"{flag} must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got {arn!r}.")
        if self.max_concurrent_per_instance is not None and not 1 <= self.max_concurrent_per_instance <= 1000:
            raise UserError("--async-max-concurrency must be 1..1000 invocations per instance.")

    def request(self) -> dict:
        """CreateEndpointConfig AsyncInferenceConfig."""
        output: dict[str, Any] = {"S3OutputPath": self.output_path.rstrip("/")}
        if self.failure_path:
            output["S3FailurePath"] = self.failure_path.rstrip("/")
        notify = {k: v for k, v in (("SuccessTopic", self.success_topic), ("ErrorTopic", self.error_topic)) if v}
        if notify:
            output["NotificationConfig"] = notify
        config: dict[str, Any] = {"OutputConfig": output}
        if self.max_concurrent_per_instance:
            config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": self.max_concurrent_per_instance}
        return config


DEFAULT_ASYNC_MAX_PAYLOAD_MB = 100


def model_environment(
    endpoint_name: str, *, variant: str = DEFAULT_VARIANT, async_max_payload_mb: int | None = None
) -> dict[str, str]:
    """The serve container's Environment on the model: the request metrics' dimensions, and for an asynchronous
    endpoint the body limit its front-end enforces (SAGEMAKER_MAX_PAYLOAD_IN_MB; 6 MB otherwise)."""
    env = {"IMGCLF_ENDPOINT_NAME": endpoint_name, "IMGCLF_ENDPOINT_VARIANT": variant}
    if async_max_payload_mb is not None:
        if not 1 <= async_max_payload_mb <= ASYNC_MAX_PAYLOAD_MB:
            raise UserError(f"--async-max-payload-mb must be 1..{ASYNC_MAX_PAYLOAD_MB}, got {async_max_payload_mb}.")
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(async_max_payload_mb)
    return env


def default_async_output(bucket: str | None, prefix: str, endpoint_name: str) -> str:
    if not bucket:
        raise UserError("Asynchronous endpoints write answers to S3: pass --async-output s3://... or --bucket.")
    return f"s3://{bucket}/{prefix}/async/{endpoint_name}/output"


@dataclass(frozen=True)
class DataCapture:
    """Requests and answers written to S3 as JSON Lines. Our JSON / JSON Lines answers are captured as text;
    image requests (image/*, application/x-npy) and .npy answers are captured base64-encoded, as SageMaker does
    for any type not listed in JsonContentTypes/CsvContentTypes."""

    destination: str
    sampling_percent: int = 20  # the SDK's default
    capture_input: bool = True
    capture_output: bool = True
    json_content_types: tuple[str, ...] = CAPTURE_JSON_TYPES
    csv_content_types: tuple[str, ...] = CAPTURE_CSV_TYPES

    def __post_init__(self) -> None:
        _s3_uri(self.destination, "--data-capture")
        if not 0 <= self.sampling_percent <= 100:
            raise UserError(f"--capture-percent must be 0..100, got {self.sampling_percent}.")
        if not (self.capture_input or self.capture_output):
            raise UserError("Data capture needs requests, answers or both.")

    def request(self) -> dict:
        """CreateEndpointConfig DataCaptureConfig."""
        modes = [m for m, on in (("Input", self.capture_input), ("Output", self.capture_output)) if on]
        return {
            "EnableCapture": True,
            "InitialSamplingPercentage": self.sampling_percent,
            "DestinationS3Uri": self.destination.rstrip("/"),
            "CaptureOptions": [{"CaptureMode": m} for m in modes],
            "CaptureContentTypeHeader": {
                "CsvContentTypes": list(self.csv_content_types),
                "JsonContentTypes": list(self.json_content_types),
            },
        }


# ---------------------------------------------------------------------------------------------------------------
# The whole CreateEndpointConfig request (boto3 / SDK v3 path).


def endpoint_config_request(
    name: str,
    model_name: str,
    *,
    instance_type: str | None = None,
    instance_count: int = 1,
    variant: str = DEFAULT_VARIANT,
    serverless: Serverless | None = None,
    async_inference: AsyncInference | None = None,
    data_capture: DataCapture | None = None,
) -> dict:
    """CreateEndpointConfig: one variant on instances, or serverless; async and capture as asked."""
    if serverless is not None and async_inference is not None:
        raise UserError("Choose one: --serverless or --async-output (Asynchronous Inference runs on instances).")
    variant_request: dict[str, Any] = {"VariantName": variant, "ModelName": model_name}
    if serverless is not None:
        check_serverless(serverless, instance_type=instance_type, data_capture=data_capture is not None)
        variant_request["ServerlessConfig"] = serverless.request()
    else:
        if not instance_type:
            raise UserError("An endpoint on instances needs --instance-type (e.g. ml.m5.large).")
        if instance_count < 1:
            raise UserError("--instance-count must be at least 1.")
        variant_request.update(InstanceType=instance_type, InitialInstanceCount=instance_count)
    request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant_request]}
    if async_inference is not None:
        request["AsyncInferenceConfig"] = async_inference.request()
    if data_capture is not None:
        request["DataCaptureConfig"] = data_capture.request()
    return request


def create_endpoint_config(sagemaker_client, request: dict) -> str:
    aws_call(
        f"CreateEndpointConfig {request['EndpointConfigName']}", sagemaker_client.create_endpoint_config, **request
    )
    return request["EndpointConfigName"]


# ---------------------------------------------------------------------------------------------------------------
# SDK v2 objects (sagemaker<3): Model.deploy(**deploy_kwargs_v2(...)).


def sdk_v2_serverless(serverless: Serverless):
    from sagemaker.serverless import ServerlessInferenceConfig

    return ServerlessInferenceConfig(memory_size_in_mb=serverless.memory_mb, max_concurrency=serverless.max_concurrency)


def sdk_v2_async(async_inference: AsyncInference):
    from sagemaker.async_inference import AsyncInferenceConfig

    notify = async_inference.request()["OutputConfig"].get("NotificationConfig")
    return AsyncInferenceConfig(
        output_path=async_inference.output_path.rstrip("/"),
        failure_path=async_inference.failure_path.rstrip("/") if async_inference.failure_path else None,
        max_concurrent_invocations_per_instance=async_inference.max_concurrent_per_instance,
        notification_config=notify,
    )


def sdk_v2_data_capture(data_capture: DataCapture):
    from sagemaker.model_monitor import DataCaptureConfig

    options = [
        m for m, on in (("REQUEST", data_capture.capture_input), ("RESPONSE", data_capture.capture_output)) if on
    ]
    return DataCaptureConfig(
        enable_capture=True,
        sampling_percentage=data_capture.sampling_percent,
        destination_s3_uri=data_capture.destination.rstrip("/"),
        capture_options=options,
        json_content_types=list(data_capture.json_content_types),
        csv_content_types=list(data_capture.csv_content_types),
    )


def deploy_kwargs_v2(
    *,
    instance_type: str | None,
    instance_count: int = 1,
    serverless: Serverless | None = None,
    async_inference: AsyncInference | None = None,
    data_capture: DataCapture | None = None,
) -> dict[str, Any]:
    """Keyword arguments for SDK v2 `Model.deploy` (serverless takes no instance type or count)."""
    endpoint_config_request(
        "check",
        "check",
        instance_type=instance_type,
        instance_count=instance_count,
        serverless=serverless,
        async_inference=async_inference,
        data_capture=data_capture,
    )  # the same checks as the boto3 path
    kwargs: dict[str, Any] = {}
    if serverless is not None:
        kwargs["serverless_inference_config"] = sdk_v2_serverless(serverless)
    else:
        kwargs.update(instance_type=instance_type, initial_instance_count=instance_count)
    if async_inference is not None:
        kwargs["async_inference_config"] = sdk_v2_async(async_inference)
    if data_capture is not None:
        kwargs["data_capture_config"] = sdk_v2_data_capture(data_capture)
    return kwargs
