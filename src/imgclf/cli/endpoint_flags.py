"""The production endpoint flags of `imgclf sagemaker deploy` (autoscaling, Serverless and Asynchronous Inference,
data capture, a dashboard): `add_endpoint_arguments`, then `options_from_args` parses and cross-checks them into
the plain data of imgclf.sagemaker.endpoints / autoscaling, every refusal before any AWS call. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgclf.errors import UserError
from imgclf.sagemaker.autoscaling import (
    DEFAULT_SCALE_IN_COOLDOWN_S,
    DEFAULT_SCALE_OUT_COOLDOWN_S,
    MEASURED_RPS_PER_VCPU,
    TARGET_SAFETY_FACTOR,
    Autoscaling,
    parse_autoscale,
)
from imgclf.sagemaker.endpoints import (
    ASYNC_MAX_PAYLOAD_MB,
    DEFAULT_ASYNC_MAX_PAYLOAD_MB,
    SERVERLESS_MEMORY_MB,
    AsyncInference,
    DataCapture,
    Serverless,
    check_serverless,
    parse_serverless,
)


def add_endpoint_arguments(parser) -> None:
    group = parser.add_argument_group("production endpoint options")
    group.add_argument("--autoscale", metavar="MIN:MAX", help="Scale the variant between MIN and MAX instances.")
    group.add_argument(
        "--target-invocations",
        type=int,
        metavar="N",
        help="Invocations per instance per minute to aim for (default: from the measured "
        f"throughput, {MEASURED_RPS_PER_VCPU:g} req/s per vCPU x {TARGET_SAFETY_FACTOR} x 60).",
    )
    group.add_argument("--scale-in-cooldown", type=int, default=DEFAULT_SCALE_IN_COOLDOWN_S, metavar="S")
    group.add_argument("--scale-out-cooldown", type=int, default=DEFAULT_SCALE_OUT_COOLDOWN_S, metavar="S")
    group.add_argument(
        "--serverless",
        metavar="MEMORY_MB[:MAX_CONCURRENCY]",
        help=f"Serverless Inference ({'/'.join(map(str, SERVERLESS_MEMORY_MB))} MB; CPU only).",
    )
    group.add_argument("--async-output", metavar="S3_URI", help="Asynchronous Inference: answers written here.")
    group.add_argument("--async-failure", metavar="S3_URI", help="Asynchronous Inference: failures written here.")
    group.add_argument("--async-success-topic", metavar="SNS_ARN")
    group.add_argument("--async-error-topic", metavar="SNS_ARN")
    group.add_argument(
        "--async-max-payload-mb",
        type=int,
        metavar="MB",
        help="Asynchronous Inference: the request body limit the serve container enforces, as "
        f"SAGEMAKER_MAX_PAYLOAD_IN_MB (default {DEFAULT_ASYNC_MAX_PAYLOAD_MB}; up to {ASYNC_MAX_PAYLOAD_MB}).",
    )
    group.add_argument(
        "--async-max-concurrency",
        type=int,
        metavar="N",
        help="Concurrent invocations per instance (default: SageMaker's choice).",
    )
    group.add_argument("--data-capture", metavar="S3_URI", help="Capture requests and answers to S3.")
    group.add_argument("--capture-percent", type=int, default=20, metavar="P", help="Sampled share (default 20).")
    group.add_argument("--dashboard", action="store_true", help="Create a CloudWatch dashboard for the endpoint.")


@dataclass(frozen=True)
class EndpointOptions:
    autoscaling: Autoscaling | None
    serverless: Serverless | None
    async_inference: AsyncInference | None
    data_capture: DataCapture | None
    dashboard: bool


def options_from_args(args, instance_type: str | None, needed_mb: int | None = None) -> EndpointOptions:
    """Parse and cross-check the flags of add_endpoint_arguments (every refusal before any AWS call)."""
    serverless = parse_serverless(args.serverless) if args.serverless else None
    scaling = None
    if args.autoscale:
        scaling = parse_autoscale(
            args.autoscale,
            instance_type=instance_type or "ml.m5.large",
            target_invocations=args.target_invocations,
            scale_in_cooldown_s=args.scale_in_cooldown,
            scale_out_cooldown_s=args.scale_out_cooldown,
        )
    async_inference = None
    if args.async_output:
        async_inference = AsyncInference(
            args.async_output,
            args.async_failure,
            args.async_success_topic,
            args.async_error_topic,
            args.async_max_concurrency,
        )
    elif args.async_failure or args.async_success_topic or args.async_error_topic or args.async_max_concurrency:
        raise UserError("The --async-* options need --async-output s3://...")
    capture = DataCapture(args.data_capture, args.capture_percent) if args.data_capture else None
    if serverless is not None:
        check_serverless(
            serverless,
            instance_type=instance_type,
            needed_mb=needed_mb,
            data_capture=capture is not None,
            autoscaling=scaling is not None,
        )
        if async_inference is not None:
            raise UserError("Choose one: --serverless or --async-output (Asynchronous Inference runs on instances).")
    return EndpointOptions(scaling, serverless, async_inference, capture, bool(args.dashboard))


def refuse_in_local_mode(options: EndpointOptions) -> None:
    """SageMaker local mode runs none of these: say so instead of silently deploying a plain endpoint."""
    flags = {
        "--autoscale": options.autoscaling,
        "--serverless": options.serverless,
        "--async-output": options.async_inference,
        "--data-capture": options.data_capture,
        "--dashboard": options.dashboard,
    }
    asked = [flag for flag, on in flags.items() if on]
    if asked:
        raise UserError(
            f"SageMaker local mode does not run {', '.join(asked)}: deploy without --local (or drop them). The "
            "serve container's side of each is tested directly (docs/production-endpoints.md)."
        )
