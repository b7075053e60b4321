"""SDK v3: ModelTrainer(training_mode=Mode.LOCAL_CONTAINER) with our train image, then a local endpoint
through v3's LocalSession (CreateModel / CreateEndpointConfig / CreateEndpoint) answering a JPEG."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
from _common import emit, load_args, running, wait_gone
from sagemaker.core.local import LocalSession

from imgclf.sagemaker.sdk_v3 import build_model_trainer, deploy_v3
from imgclf.sagemaker.target import LOCAL_ROLE, file_uri, local_config, resolve_target

args = load_args()
workdir = Path(args["workdir"])
target = resolve_target(local=True, workdir=workdir)
train_root = workdir / "v3-train"
trainer = build_model_trainer(
    target,
    data=args["channels"],
    image_uri=args["train_image"],
    hyperparameters=args["hyperparameters"],
    local_container_root=train_root,
)
started = time.monotonic()
trainer.train(wait=True)
result = {"train_seconds": time.monotonic() - started, "trainer_class": type(trainer).__name__}
model_tar = train_root / "compressed_artifacts" / "model.tar.gz"
result["model_tar"] = str(model_tar)

session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
session.config = {"local": local_config(target)}
name = "imgclf-v3-local"
before = running(args["serve_image"])
started = time.monotonic()
deploy_v3(
    session.sagemaker_client,
    name=name,
    image_uri=args["serve_image"],
    model_data=file_uri(model_tar),
    role=LOCAL_ROLE,
    instance_type="local",
)
result["deploy_seconds"] = time.monotonic() - started
containers = running(args["serve_image"]) - before
try:
    answers = {}
    for path in args["images"]:
        resp = session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=name, ContentType="image/jpeg", Accept="application/json", Body=Path(path).read_bytes()
        )
        answers[path] = {"status": resp["Body"].status, "json": json.loads(resp["Body"].data)}
    result["answers"] = answers
finally:
    t0 = time.monotonic()
    session.sagemaker_client.delete_endpoint(EndpointName=name)
    result["delete_seconds"] = time.monotonic() - t0
    result["stopped_seconds"] = wait_gone(containers)
emit(result)
