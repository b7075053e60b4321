"""SDK v2: Model(...).deploy(1, 'local') with IdentitySerializer('image/jpeg') + JSONDeserializer, bad payloads
through the SDK's runtime client, then delete_endpoint and how fast the container goes away."""

from __future__ import annotations

import time
from pathlib import Path

from _common import emit, load_args, running, wait_gone

from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.target import resolve_target

args = load_args()
target = resolve_target(local=True, workdir=args["workdir"])
model = sdk_v2.build_model(target, args["model_tar"], image_uri=args["image"])
before = running(args["image"])
started = time.monotonic()
predictor = sdk_v2.deploy(model, instance_type="local")
deploy_seconds = time.monotonic() - started
containers = running(args["image"]) - before
result = {
    "deploy_seconds": deploy_seconds,
    "predictor_class": type(predictor).__name__,
    "serializer": [type(predictor.serializer).__name__, predictor.serializer.CONTENT_TYPE],
    "deserializer": type(predictor.deserializer).__name__,
    "containers": len(containers),
}
deleted = False
try:
    answers, latencies = {}, []
    for path in args["images"]:
        t0 = time.monotonic()
        answers[path] = predictor.predict(Path(path).read_bytes())
        latencies.append(time.monotonic() - t0)
    result["answers"], result["latencies"] = answers, latencies

    runtime = predictor.sagemaker_session.sagemaker_runtime_client
    bad = {}
    for name, content_type, body in (
        ("garbage", "image/jpeg", b"this is not an image"),
        ("truncated_jpeg", "image/jpeg", Path(args["images"][0]).read_bytes()[:100]),
        ("wrong_content_type", "text/csv", b"1,2,3"),
    ):
        # Local mode returns the raw HTTP response (real SageMaker raises ModelError): read its status.
        resp = runtime.invoke_endpoint(
            EndpointName=predictor.endpoint_name, ContentType=content_type, Accept="application/json", Body=body
        )
        bad[name] = {"status": resp["Body"].status, "body": resp["Body"].data[:300].decode("utf-8", "replace")}
    result["bad"] = bad
    # The endpoint still answers after the bad requests.
    result["after_bad"] = predictor.predict(Path(args["images"][0]).read_bytes())

    t0 = time.monotonic()
    predictor.delete_endpoint()
    deleted = True
    result["delete_seconds"] = time.monotonic() - t0
    result["stopped_seconds"] = wait_gone(containers)
    result["still_running"] = len(containers & running(args["image"]))
finally:
    if not deleted:
        predictor.delete_endpoint()
emit(result)
