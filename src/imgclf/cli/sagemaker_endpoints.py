"""`imgclf sagemaker deploy` and `imgclf sagemaker autoscale`: endpoints, and the production options of
imgclf.sagemaker.endpoints (autoscaling, Serverless and Asynchronous Inference, data capture, a dashboard).

deploy     SDK v2 installed: `Model.deploy(**endpoints.deploy_kwargs_v2(...))` (and local mode); SDK v3 or no SDK:
           boto3 CreateModel / CreateEndpointConfig (`endpoints.endpoint_config_request`) / CreateEndpoint
           (sdk_v3.deploy_v3) and the endpoint_in_service waiter. Once InService: autoscaling, the dashboard,
           --predict, --delete.
autoscale  RegisterScalableTarget + PutScalingPolicy on a live endpoint's variant, or --off to remove them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from imgclf.cli import endpoint_flags
from imgclf.errors import UserError
from imgclf.sagemaker import autoscaling, dashboard, endpoints
from imgclf.sagemaker.aws_errors import aws_call
from imgclf.sagemaker.target import Target, is_remote

WAIT_DELAY_S = 15
WAIT_MAX_S = 3600


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    endpoint_flags.add_endpoint_arguments(parser)


def add_autoscale_parser(sub) -> None:
    auto = sub.add_parser("autoscale", help="Change or remove autoscaling of a live endpoint's variant.")
    auto.add_argument("endpoint_name", metavar="ENDPOINT")
    how = auto.add_mutually_exclusive_group(required=True)
    how.add_argument("--autoscale", metavar="MIN:MAX", help="Scale between MIN and MAX instances.")
    how.add_argument("--off", action="store_true", help="Remove the scaling policies and the scalable target.")
    auto.add_argument("--variant", default=autoscaling.DEFAULT_VARIANT, help="Default: %(default)s.")
    auto.add_argument(
        "--target-invocations",
        type=int,
        metavar="N",
        help="Invocations per instance per minute (default: from the measured throughput and the instance type).",
    )
    auto.add_argument("--scale-in-cooldown", type=int, default=autoscaling.DEFAULT_SCALE_IN_COOLDOWN_S, metavar="S")
    auto.add_argument("--scale-out-cooldown", type=int, default=autoscaling.DEFAULT_SCALE_OUT_COOLDOWN_S, metavar="S")
    auto.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION / your AWS config).")


# ---- deploy ------------------------------------------------------------------------------------------------------


def artifact_bytes(model_data: str, region: str | None) -> int:
    """The model.tar.gz's size: HeadObject for s3://, the file's size otherwise."""
    if is_remote(model_data):
        import boto3

        from imgclf.async_client import split_s3

        bucket, key = split_s3(model_data, "--model-data")
        s3 = boto3.client("s3", region_name=region)
        return aws_call(f"HeadObject {model_data}", s3.head_object, Bucket=bucket, Key=key)["ContentLength"]
    path = Path(model_data.removeprefix("file://"))
    if not path.is_file():
        raise UserError(f"--model-data {model_data}: no such file.")
    return path.stat().st_size


def _use_boto3(target: Target) -> bool:
    """SageMaker (not local mode) without SDK v2: the boto3 path (SDK v3 has no Model.deploy)."""
    if target.local:
        return False
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("sagemaker").split(".")[0]) >= 3
    except PackageNotFoundError:
        return True


def _endpoint_options_given(args: argparse.Namespace) -> bool:
    return any(
        (
            args.autoscale,
            args.serverless,
            args.async_output,
            args.data_capture,
            args.dashboard,
            args.async_max_payload_mb,
        )
    )


def run_deploy(args: argparse.Namespace, target: Target) -> int:
    from imgclf.sagemaker import jobs
    from imgclf.sagemaker.target import sdk_major

    if args.model_package:
        if _endpoint_options_given(args):
            raise UserError("The production endpoint options work with --model-data, not with --model-package yet.")
        sdk_major()
        from imgclf.cli.sagemaker_pipeline import run_deploy_package

        return run_deploy_package(args, target)
    default_type = "local" if target.local else "ml.m5.large"
    # Serverless has no instance type: only one the user gave is checked (and refused unless "local").
    instance_type = args.instance_type if args.serverless else (args.instance_type or default_type)
    needed_mb = endpoints.model_memory_mb(artifact_bytes(args.model_data, target.region)) if args.serverless else None
    opts = endpoint_flags.options_from_args(args, instance_type, needed_mb=needed_mb)
    if target.local:
        endpoint_flags.refuse_in_local_mode(opts)
    if args.async_max_payload_mb is not None and opts.async_inference is None:
        raise UserError("--async-max-payload-mb is for asynchronous endpoints: add --async-output s3://...")
    name = args.endpoint_name or jobs.unique_job_name("imgclf-endpoint")
    env = endpoints.model_environment(
        name,
        async_max_payload_mb=(args.async_max_payload_mb or endpoints.DEFAULT_ASYNC_MAX_PAYLOAD_MB)
        if opts.async_inference
        else None,
    )
    if _use_boto3(target):
        return _deploy_boto3(args, target, name, instance_type, opts, env)
    sdk_major()  # a clear error when the SDK is missing (local mode needs it)
    return _deploy_sdk_v2(args, target, name, instance_type, opts, env)


def _deploy_sdk_v2(args, target: Target, name: str, instance_type, opts, env) -> int:
    from imgclf.sagemaker import sdk_v2

    model = sdk_v2.build_model(target, args.model_data, image_uri=args.image_uri, env=env)
    predictor = sdk_v2.deploy(
        model,
        instance_type=instance_type,
        instance_count=args.instance_count,
        endpoint_name=name,
        serverless=opts.serverless,
        async_inference=opts.async_inference,
        data_capture=opts.data_capture,
    )
    print(f"endpoint: {predictor.endpoint_name}", flush=True)
    boto_session = model.sagemaker_session.boto_session

    def delete() -> None:
        predictor.delete_endpoint()

    return _after_in_service(args, target, name, opts, boto_session, predictor, delete)


def _deploy_boto3(args, target: Target, name: str, instance_type, opts, env) -> int:
    import boto3

    if not args.image_uri:
        raise UserError("--image-uri is needed (the serve image's ECR URI scripts/build_push.sh printed).")
    if not is_remote(args.model_data):
        raise UserError(f"--model-data must be an s3:// URI of a model.tar.gz on SageMaker, got {args.model_data!r}.")
    from imgclf.sagemaker.sdk_v3 import deploy_v3

    boto_session = boto3.Session(region_name=target.region)
    sm = boto_session.client("sagemaker")
    request = endpoints.endpoint_config_request(
        name,
        name,
        instance_type=instance_type,
        instance_count=args.instance_count,
        serverless=opts.serverless,
        async_inference=opts.async_inference,
        data_capture=opts.data_capture,
    )
    deploy_v3(
        sm,
        name=name,
        image_uri=args.image_uri,
        model_data=args.model_data,
        role=target.role,
        environment=env,
        endpoint_config=request,
    )
    print(f"endpoint: {name} (creating)", flush=True)
    started = time.monotonic()
    waiter = sm.get_waiter("endpoint_in_service")
    config = {"Delay": WAIT_DELAY_S, "MaxAttempts": WAIT_MAX_S // WAIT_DELAY_S}
    aws_call(f"Waiting for endpoint {name} to be InService", waiter.wait, EndpointName=name, WaiterConfig=config)
    print(f"endpoint: {name} InService ({time.monotonic() - started:.0f} s)", flush=True)

    def delete() -> None:
        aws_call(f"DeleteEndpoint {name}", sm.delete_endpoint, EndpointName=name)
        aws_call(f"DeleteEndpointConfig {name}", sm.delete_endpoint_config, EndpointConfigName=name)
        aws_call(f"DeleteModel {name}", sm.delete_model, ModelName=name)

    return _after_in_service(args, target, name, opts, boto_session, None, delete)


def _after_in_service(args, target: Target, name: str, opts, boto_session, predictor, delete) -> int:
    """Autoscaling, the dashboard, --predict and --delete: what needs the endpoint InService."""
    scaled = False
    try:
        if opts.autoscaling is not None:
            aas = boto_session.client("application-autoscaling")
            autoscaling.apply_autoscaling(aas, name, opts.autoscaling)
            scaled = True
            s = opts.autoscaling
            print(
                f"autoscaling: {s.min_capacity}..{s.max_capacity} instances, target {s.target_invocations} "
                f"invocations/instance/minute",
                flush=True,
            )
        if opts.dashboard:
            region = target.region or boto_session.region_name
            body = dashboard.dashboard_body(name, region, is_async=opts.async_inference is not None)
            dashboard.put_dashboard(boto_session.client("cloudwatch"), f"imgclf-{name}", body)
            print(
                f"dashboard: https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
                f"#dashboards:name=imgclf-{name}",
                flush=True,
            )
        for image in args.predict:
            print(
                json.dumps({"image": image, "prediction": _predict(target, name, image, opts, predictor)}), flush=True
            )
    finally:
        if target.local or args.delete:
            started = time.monotonic()
            if scaled:
                autoscaling.remove_autoscaling(boto_session.client("application-autoscaling"), name)
            delete()
            print(f"endpoint deleted ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


def _predict(target: Target, name: str, image: str, opts, predictor):
    path = Path(image)
    if opts.async_inference is not None:
        from imgclf.async_client import predict_async, progress_printer

        location = f"s3://{target.bucket}/{target.prefix}/async/{name}/input"
        answer = predict_async(name, path, input_location=location, progress=progress_printer(), region=target.region)
        return json.loads(answer.body)
    body = path.read_bytes()
    endpoints.check_payload(len(body), "serverless" if opts.serverless else "realtime")
    if predictor is not None:
        return predictor.predict(body)
    import boto3

    from imgclf.client import ACCEPT, content_type_for

    runtime = boto3.client("sagemaker-runtime", region_name=target.region)
    response = aws_call(
        f"InvokeEndpoint {name}",
        runtime.invoke_endpoint,
        EndpointName=name,
        Body=body,
        ContentType=content_type_for(image),
        Accept=ACCEPT,
    )
    return json.loads(response["Body"].read())


# ---- autoscale ---------------------------------------------------------------------------------------------------


def run_autoscale(args: argparse.Namespace) -> int:
    """Needs only a region and credentials (no role or bucket): the endpoint exists already."""
    import boto3

    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    session = boto3.Session(region_name=region)
    if not session.region_name:
        raise UserError("No AWS region: pass --region or set AWS_DEFAULT_REGION.")
    sm, aas = session.client("sagemaker"), session.client("application-autoscaling")
    name, variant = args.endpoint_name, args.variant
    if args.off:
        if args.target_invocations is not None:
            raise UserError("--off removes autoscaling; --target-invocations is for --autoscale MIN:MAX.")
        removed = autoscaling.remove_autoscaling(aas, name, variant)
        print(json.dumps({"endpoint": name, "variant": variant, "autoscaling": "removed" if removed else "none"}))
        return 0
    instance_type = autoscaling.variant_instance_type(sm, name, variant)
    scaling = autoscaling.parse_autoscale(
        args.autoscale,
        instance_type=instance_type,
        target_invocations=args.target_invocations,
        scale_in_cooldown_s=args.scale_in_cooldown,
        scale_out_cooldown_s=args.scale_out_cooldown,
    )
    autoscaling.apply_autoscaling(aas, name, scaling, variant)
    print(
        json.dumps(
            {
                "endpoint": name,
                "variant": variant,
                "instance_type": instance_type,
                "min": scaling.min_capacity,
                "max": scaling.max_capacity,
                "target_invocations_per_instance_per_minute": scaling.target_invocations,
                "scale_in_cooldown_s": scaling.scale_in_cooldown_s,
                "scale_out_cooldown_s": scaling.scale_out_cooldown_s,
            }
        )
    )
    return 0
