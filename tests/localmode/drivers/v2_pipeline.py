"""SDK v2 SageMaker Pipelines: the definition, the registry calls against moto, and the local run.

args["mode"]:
  definition  build the SageMaker pipeline and the local one (no Docker, no AWS): emit both definitions.
  registry    against moto_server (args["endpoint"]): CreateModelPackageGroup + CreateModelPackage from the
              definition's RegisterModel arguments, then imgclf.sagemaker.registry's approval and listing.
  run         LocalPipelineSession on Docker with S3 on moto_server: one execution per threshold in
              args["thresholds"]; emit each execution's steps and the evaluation.json it wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
from _common import emit, load_args

from imgclf.sagemaker import registry
from imgclf.sagemaker.pipeline import REGISTER, PipelineOptions, build_pipeline, pipeline_session, step_names
from imgclf.sagemaker.target import LOCAL_ROLE, Target

args = load_args()
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/imgclf-pipeline"


def options(**kw) -> PipelineOptions:
    base = dict(
        name=args.get("name", "imgclf-test"),
        channels=args["channels"],
        output_uri=f"s3://{args['bucket']}/imgclf/pipelines/imgclf-test",
        hyperparameters=args["hyperparameters"],
        train_image=args["train_image"],
        serve_image=args["serve_image"],
        threshold=args.get("threshold", 0.8),
    )
    base.update(kw)
    return PipelineOptions(**base)


def definition(local: bool) -> dict:
    target = Target(local=local, region=REGION, role=LOCAL_ROLE if local else ROLE, bucket=args["bucket"])
    return json.loads(build_pipeline(target, options()).definition())


def find_step(steps: list, name: str) -> dict:
    for step in steps:
        if step["Name"] == name:
            return step
        found = find_step(
            step.get("Arguments", {}).get("IfSteps", []) + step.get("Arguments", {}).get("ElseSteps", []), name
        )
        if found:
            return found
    return {}


mode = args["mode"]
if mode == "definition":
    sagemaker, local = definition(False), definition(True)
    emit({"sagemaker": sagemaker, "local": local, "names": step_names(sagemaker), "local_names": step_names(local)})

elif mode == "registry":
    client = boto3.client("sagemaker", region_name=REGION, endpoint_url=args["endpoint"])
    register = find_step(definition(False)["Steps"], f"{REGISTER}-RegisterModel")["Arguments"]
    # What SageMaker substitutes at execution time: the trained model's URI, the evaluation's, the status.
    model_data = f"s3://{args['bucket']}/imgclf/pipelines/imgclf-test/training/job/output/model.tar.gz"
    container = dict(register["InferenceSpecification"]["Containers"][0], ModelDataUrl=model_data)
    request = dict(register)
    request["InferenceSpecification"] = dict(register["InferenceSpecification"], Containers=[container])
    request["ModelApprovalStatus"] = "PendingManualApproval"
    request["ModelMetrics"] = {
        "ModelQuality": {
            "Statistics": {
                "ContentType": "application/json",
                "S3Uri": f"s3://{args['bucket']}/imgclf/pipelines/imgclf-test/evaluation/exec-1/evaluation.json",
            }
        }
    }
    request.pop("SkipModelValidation", None)  # "None" is the SDK's spelling of the default; moto rejects it
    client.create_model_package_group(ModelPackageGroupName=register["ModelPackageGroupName"])
    arn = client.create_model_package(**request)["ModelPackageArn"]
    pending = registry.latest_version(client, register["ModelPackageGroupName"], registry.PENDING)
    approved = registry.set_approval(client, arn, registry.APPROVED, "test: metrics checked")
    latest_approved = registry.latest_version(client, register["ModelPackageGroupName"], registry.APPROVED)
    emit(
        {
            "request": request,
            "arn": arn,
            "pending": pending,
            "approved": {k: approved.get(k) for k in ("ModelApprovalStatus", "ApprovalDescription", "ModelMetrics")},
            "latest_approved": latest_approved,
        }
    )

elif mode == "run":
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=args["endpoint"])
    s3.create_bucket(Bucket=args["bucket"])
    target = Target(local=True, region=REGION, role=LOCAL_ROLE, bucket=args["bucket"], workdir=Path(args["workdir"]))
    sess = pipeline_session(target, s3_endpoint_url=args["endpoint"])
    pipeline = build_pipeline(target, options(), sess)
    pipeline.upsert(role_arn=LOCAL_ROLE)
    prefix = "imgclf/pipelines/imgclf-test/evaluation/"
    runs = []
    for threshold in args["thresholds"]:
        started = time.monotonic()
        execution = pipeline.start(parameters={"QualityThreshold": threshold})  # local: runs to the end here
        seconds = time.monotonic() - started
        steps = execution.list_steps()
        steps = steps["PipelineExecutionSteps"] if isinstance(steps, dict) else steps
        described = execution.describe()
        objects = s3.list_objects_v2(Bucket=args["bucket"], Prefix=prefix).get("Contents", [])
        reports = sorted((o for o in objects if o["Key"].endswith("/evaluation.json")), key=lambda o: o["LastModified"])
        evaluation = (
            json.loads(s3.get_object(Bucket=args["bucket"], Key=reports[-1]["Key"])["Body"].read()) if reports else None
        )
        runs.append(
            {
                "threshold": threshold,
                "seconds": seconds,
                "status": described.get("PipelineExecutionStatus"),
                "failure": described.get("FailureReason"),
                "steps": [
                    {k: s.get(k) for k in ("StepName", "StepStatus", "FailureReason", "Metadata")} for s in steps
                ],
                "evaluation_key": reports[-1]["Key"] if reports else None,
                "evaluation": evaluation,
            }
        )
    emit({"runs": runs})
