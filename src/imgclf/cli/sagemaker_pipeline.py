"""`imgclf sagemaker pipeline|approve` and `deploy --model-package`: the SageMaker Pipelines / Model Registry
actions of `imgclf sagemaker` (imgclf.cli.sagemaker adds these parsers and dispatches here).

pipeline  build the pipeline (imgclf.sagemaker.pipeline) from the same options as `train`; print its definition,
          upsert it, start an execution (local mode: runs it now, on Docker) and wait for it.
approve   UpdateModelPackage(ModelApprovalStatus=Approved|Rejected) for a version the pipeline registered.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from imgclf import hyperparameters as hp_spec
from imgclf.errors import UserError
from imgclf.processing_contract import GATE_METRICS
from imgclf.sagemaker.jobs import channels
from imgclf.sagemaker.target import Target, file_uri, is_remote


def add_parsers(sub, common: Callable, training_args: Callable) -> None:
    pipe = sub.add_parser("pipeline", help="SageMaker Pipeline: train -> evaluate -> quality gate -> register.")
    common(pipe, training=True)
    training_args(pipe)
    g = pipe.add_argument_group("pipeline")
    g.add_argument("--name", default="imgclf", help="Pipeline name (default: %(default)s).")
    g.add_argument("--serve-image-uri", help="Serve image registered with the model (default local: imgclf-serve).")
    g.add_argument("--eval-instance-type", help="Evaluation processing instance (default: ml.m5.large).")
    g.add_argument("--gate-metric", default="accuracy", choices=GATE_METRICS, help="Default: %(default)s.")
    g.add_argument("--threshold", type=float, default=0.8, help="Register when metric >= this (default: %(default)s).")
    g.add_argument("--model-package-group", default="imgclf", help="Model Package Group (default: %(default)s).")
    g.add_argument(
        "--approval-status",
        default="PendingManualApproval",
        choices=("PendingManualApproval", "Approved", "Rejected"),
        help="Status of registered versions (default: %(default)s).",
    )
    g.add_argument("--create-model", action="store_true", help="Also create a SageMaker Model after registering.")
    g.add_argument("--no-cache", dest="cache", action="store_false", help="No step caching.")
    g.add_argument("--s3-endpoint-url", help="Local mode: an S3-compatible endpoint (moto_server, MinIO).")
    g.add_argument("--print-definition", action="store_true", help="Print the pipeline definition JSON.")
    g.add_argument("--upsert", action="store_true", help="Create or update the pipeline.")
    g.add_argument("--start", action="store_true", help="Start an execution (upserts first).")
    g.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="Execution parameter override."
    )

    approve = sub.add_parser("approve", help="Approve (or reject) a registered model version.")
    approve.add_argument("model_package_arn", metavar="MODEL_PACKAGE_ARN")
    approve.add_argument("--reject", action="store_true", help="Set Rejected instead of Approved.")
    approve.add_argument("--description", help="ApprovalDescription.")
    approve.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION / your AWS config).")
    approve.add_argument("--endpoint-url", help="SageMaker API endpoint (tests: moto_server).")


def _pipeline_channels(args: argparse.Namespace, target: Target) -> dict[str, str]:
    chans = channels(args.data, args.train, args.valid, args.test)
    if target.local:
        return {k: v if is_remote(v) or v.startswith("file://") else file_uri(v) for k, v in chans.items()}
    if not all(is_remote(v) for v in chans.values()):
        raise UserError("On SageMaker a pipeline's channels are s3:// URIs (upload the data first: aws s3 sync).")
    return chans


def run_pipeline(args: argparse.Namespace, target: Target) -> int:
    from imgclf.sagemaker.pipeline import PipelineOptions, build_pipeline, pipeline_session

    if not target.bucket:
        raise UserError("A pipeline keeps its outputs in S3: pass --bucket (local mode too; see --s3-endpoint-url).")
    opts = PipelineOptions(
        name=args.name,
        channels=_pipeline_channels(args, target),
        output_uri=f"s3://{target.bucket}/{target.prefix}/pipelines/{args.name}",
        train_image=args.image_uri or ("imgclf-train:latest" if target.local else ""),
        serve_image=args.serve_image_uri or ("imgclf-serve:latest" if target.local else ""),
        hyperparameters=hp_spec.given_arguments(args),
        train_instance_type=args.instance_type or "ml.m5.xlarge",
        train_instance_count=args.instance_count,
        eval_instance_type=args.eval_instance_type or "ml.m5.large",
        gate_metric=args.gate_metric,
        threshold=args.threshold,
        model_package_group=args.model_package_group,
        approval_status=args.approval_status,
        create_model=args.create_model,
        debugger=args.debugger,
        cache_for="P30D" if args.cache else None,
        max_run=args.max_run,
    )
    if not (opts.train_image and opts.serve_image):
        raise UserError("--image-uri and --serve-image-uri are needed on SageMaker (the ECR URIs).")
    pipeline = build_pipeline(target, opts, pipeline_session(target, args.s3_endpoint_url))
    if args.print_definition or not (args.upsert or args.start):
        print(json.dumps(json.loads(pipeline.definition()), indent=1), flush=True)
    if args.upsert or args.start:
        pipeline.upsert(role_arn=target.role)
        print(f"pipeline: {args.name} upserted", flush=True)
    if args.start:
        overrides = dict(p.split("=", 1) for p in args.parameter)
        execution = pipeline.start(parameters=overrides or None)
        if args.wait and not target.local:
            try:
                execution.wait(delay=30, max_attempts=480)
            except Exception as exc:  # WaiterError: the execution failed or stopped; the steps say why
                print(f"execution did not succeed: {exc}", flush=True)
        steps = execution.list_steps()
        steps = steps["PipelineExecutionSteps"] if isinstance(steps, dict) else steps  # local mode: a dict
        for step in sorted(steps, key=lambda s: s.get("StartTime", 0)):
            line = {"step": step["StepName"], "status": step["StepStatus"]}
            if step.get("FailureReason"):
                line["reason"] = step["FailureReason"]
            metadata = step.get("Metadata") or {}
            if "Condition" in metadata:
                line["outcome"] = metadata["Condition"]["Outcome"]
            registered = metadata.get("RegisterModel", {}).get("Arn")
            if registered:
                line["model_package"] = registered
            print(json.dumps(line), flush=True)
    return 0


def run_approve(args: argparse.Namespace) -> int:
    from imgclf.sagemaker import registry
    from imgclf.sagemaker.target import Target

    target = Target(local=False, region=args.region or _default_region(), role="")
    client = registry.sagemaker_client(target, args.endpoint_url)
    status = registry.REJECTED if args.reject else registry.APPROVED
    package = registry.set_approval(client, args.model_package_arn, status, args.description)
    print(json.dumps({"model_package": args.model_package_arn, "status": package["ModelApprovalStatus"]}))
    return 0


def _default_region() -> str:
    import boto3

    region = boto3.Session().region_name
    if not region:
        raise UserError("No AWS region: pass --region or set AWS_DEFAULT_REGION.")
    return region


def run_deploy_package(args: argparse.Namespace, target: Target) -> int:
    from imgclf.sagemaker import registry

    predictor = registry.deploy_model_package(
        target,
        args.model_package,
        instance_type=args.instance_type or "ml.m5.large",
        instance_count=args.instance_count,
        endpoint_name=args.endpoint_name,
    )
    print(f"endpoint: {predictor.endpoint_name}", flush=True)
    return 0
