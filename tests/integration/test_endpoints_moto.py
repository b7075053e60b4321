"""The endpoint options' AWS calls against moto in server mode (support/moto.py: a moto_server process on a free
127.0.0.1 port, reached through boto3's endpoint override, shared with tests/container/test_push.py): each request
is sent, then read back through the matching Describe/Get call and compared with what we built. No real AWS.

What moto does not model is checked only against botocore's service model in tests/unit/sagemaker/test_endpoints.py
(the list is in docs/production-endpoints.md)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import boto3
import pytest
from support.moto import MISSING, aws_env, moto_server, moto_server_path

from imgclf.async_client import predict_async, wait_for_answer
from imgclf.errors import UserError
from imgclf.sagemaker import autoscaling, dashboard, endpoints

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/imgclf"
ANSWER = {"predictions": [[{"label": "class-3", "probability": 0.91}]]}


@pytest.fixture(scope="module")
def moto_url():
    if moto_server_path() is None:
        pytest.fail(MISSING, pytrace=False)
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """boto3 clients on moto (dummy credentials; no AWS config file of the user's is read)."""
    for var, value in aws_env(moto_url, tmp_path, REGION).items():
        monkeypatch.setenv(var, value)
    return lambda service: boto3.client(service, region_name=REGION, endpoint_url=moto_url)


def _endpoint(aws, name: str, request: dict) -> None:
    sm = aws("sagemaker")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf-serve:v1",
                                      "ModelDataUrl": "s3://b/model.tar.gz"})  # fmt: skip
    endpoints.create_endpoint_config(sm, request)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=request["EndpointConfigName"])


def test_async_endpoint_config_with_capture_reads_back_as_sent(aws):
    request = endpoints.endpoint_config_request(
        "ep-async", "ep-async", instance_type="ml.m5.large", instance_count=2,
        async_inference=endpoints.AsyncInference("s3://b/out", "s3://b/fail",
                                                 "arn:aws:sns:us-east-1:123456789012:ok",
                                                 "arn:aws:sns:us-east-1:123456789012:err", 4),
        data_capture=endpoints.DataCapture("s3://b/capture", 40),
    )  # fmt: skip
    _endpoint(aws, "ep-async", request)
    got = aws("sagemaker").describe_endpoint_config(EndpointConfigName="ep-async")
    assert got["AsyncInferenceConfig"] == request["AsyncInferenceConfig"]
    assert got["DataCaptureConfig"] == request["DataCaptureConfig"]
    (variant,) = got["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)


def test_serverless_endpoint_config_reads_back_as_sent(aws):
    request = endpoints.endpoint_config_request("ep-sls", "ep-sls", serverless=endpoints.Serverless(3072, 8))
    _endpoint(aws, "ep-sls", request)
    (variant,) = aws("sagemaker").describe_endpoint_config(EndpointConfigName="ep-sls")["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 8}
    assert "InstanceType" not in variant


def test_a_validation_exception_from_the_service_is_a_user_error(aws):
    """Past our own checks (a hand-made request), AWS's ValidationException reads as a UserError."""
    request = endpoints.endpoint_config_request("ep-bad", "ep-bad", serverless=endpoints.Serverless(2048))
    request["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] = 2000
    with pytest.raises(UserError, match="CreateEndpointConfig ep-bad failed: ValidationException.*MemorySizeInMB"):
        endpoints.create_endpoint_config(aws("sagemaker"), request)


def test_autoscaling_registers_the_variant_and_a_target_tracking_policy_then_removes_them(aws):
    request = endpoints.endpoint_config_request("ep-as", "ep-as", instance_type="ml.m5.large")
    _endpoint(aws, "ep-as", request)
    variants = autoscaling.endpoint_variants(aws("sagemaker"), "ep-as")
    assert [v["VariantName"] for v in variants] == ["AllTraffic"]

    aas = aws("application-autoscaling")
    scaling = autoscaling.Autoscaling(1, 4, 900, 240, 45)
    autoscaling.apply_autoscaling(aas, "ep-as", scaling)
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    sent = autoscaling.scalable_target_request("ep-as", scaling)
    assert {k: target[k] for k in sent} == sent
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    sent = autoscaling.scaling_policy_request("ep-as", scaling)
    assert {k: policy[k] for k in sent} == sent

    # changing it on the live endpoint replaces both, it does not add a second policy
    autoscaling.apply_autoscaling(aas, "ep-as", autoscaling.Autoscaling(2, 6, 300))
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 300.0

    assert autoscaling.remove_autoscaling(aas, "ep-as") is True
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert autoscaling.remove_autoscaling(aas, "ep-as") is False


def test_autoscaling_a_missing_endpoint_is_a_user_error(aws):
    with pytest.raises(UserError, match="DescribeEndpoint no-such-endpoint failed"):
        autoscaling.endpoint_variants(aws("sagemaker"), "no-such-endpoint")


def test_dashboard_reads_back_as_sent(aws):
    body = dashboard.dashboard_body("ep-as", REGION)
    dashboard.put_dashboard(aws("cloudwatch"), "imgclf-ep-as", body)
    got = aws("cloudwatch").get_dashboard(DashboardName="imgclf-ep-as")
    assert json.loads(got["DashboardBody"]) == body


def _queue_async_results(moto_url: str, results: list[dict]) -> None:
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/sagemaker/async-endpoint-results",
        data=json.dumps({"region": REGION, "results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (7 * 2**20))  # above the 6 MB real-time limit
    return path


def test_predict_async_uploads_invokes_and_returns_the_answer(aws, moto_url, image):
    aws("s3").create_bucket(Bucket="inputs")
    _queue_async_results(moto_url, [{"data": json.dumps(ANSWER)}])
    seen = []
    answer = predict_async("ep-async", image, input_location="s3://inputs/imgclf/async", timeout_s=30, poll_s=0.1,
                           progress=lambda elapsed, where: seen.append(elapsed))  # fmt: skip
    assert json.loads(answer.body) == ANSWER
    bucket, _, key = answer.input_location[5:].partition("/")
    assert key.startswith("imgclf/async/") and key.endswith("-big.png")
    uploaded = aws("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert uploaded == image.read_bytes()
    assert seen[-1] == -1.0  # the indicator's "done"


def test_predict_async_failure_location_becomes_a_user_error(aws, moto_url, image):
    aws("s3").create_bucket(Bucket="inputs")
    _queue_async_results(moto_url, [{"is_failure": True, "data": "415 Unsupported Media Type: send image/*"}])
    with pytest.raises(UserError, match="The endpoint failed this request.*415 Unsupported Media Type"):
        predict_async("ep-async", image, input_location="s3://inputs/x", timeout_s=30, poll_s=0.1)


def test_waiting_polls_until_the_answer_appears_later(aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket="answers")
    timer = threading.Timer(1.0, lambda: s3.put_object(Bucket="answers", Key="out/1.out", Body=json.dumps(ANSWER)))
    timer.start()
    seen = []
    try:
        body = wait_for_answer(s3, "s3://answers/out/1.out", "s3://answers/fail/1.out", timeout_s=20, poll_s=0.2,
                               progress=lambda elapsed, where: seen.append(elapsed))  # fmt: skip
    finally:
        timer.cancel()
    assert json.loads(body) == ANSWER
    assert len(seen) >= 3 and seen[-1] == -1.0 and max(seen) >= 0.5  # polled while it was missing


def test_waiting_gives_up_after_the_timeout_and_says_where_the_answer_will_be(aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket="slow")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"No answer within 1 s.*s3://slow/out/x.out"):
        wait_for_answer(s3, "s3://slow/out/x.out", None, timeout_s=1.0, poll_s=0.2)
    assert time.monotonic() - started < 5
