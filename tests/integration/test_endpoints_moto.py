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
from support.moto import aws_env, moto_server

from imgclf.async_client import predict_async, wait_for_answer
from imgclf.errors import UserError
from imgclf.sagemaker import autoscaling, dashboard, endpoints

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/imgclf"
ANSWER = {"predictions": [[{"label": "class-3", "probability": 0.91}]]}


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """boto3 clients on moto (dummy credentials; no AWS config file of the user's is read)."""
    reset = urllib.request.Request(f"{moto_url}/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()  # each test starts from an empty account
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


# ---- the commands, end to end against moto (`imgclf sagemaker deploy|autoscale`, `imgclf predict --async`) -------

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf-serve:v1"


@pytest.fixture
def model_tarball(aws):
    """A model.tar.gz in moto's S3 of 45 MB (ResNet-18's size) that deploy sizes serverless memory from."""
    s3 = aws("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="imgclf/model.tar.gz", Body=b"\0" * (45 * 2**20))
    return "s3://models/imgclf/model.tar.gz"


def _imgclf(*argv: str) -> int:
    from imgclf import cli

    return cli.main(list(argv))


def _deploy(*argv: str) -> list[str]:
    return ["sagemaker", "deploy", "--role", ROLE, "--bucket", "models", "--region", REGION, "--image-uri",
            IMAGE_URI, *argv]  # fmt: skip


def test_deploy_with_autoscaling_capture_and_dashboard_sends_every_request(aws, model_tarball, capsys):
    rc = _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-cli", "--instance-type",
                          "ml.c5.xlarge", "--instance-count", "2", "--autoscale", "2:5", "--target-invocations",
                          "700", "--scale-in-cooldown", "600", "--scale-out-cooldown", "30", "--data-capture",
                          "s3://models/capture", "--capture-percent", "35", "--dashboard"))  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ep-cli InService" in out and "autoscaling: 2..5 instances, target 700" in out
    sm = aws("sagemaker")
    container = sm.describe_model(ModelName="ep-cli")["PrimaryContainer"]
    assert container["Environment"] == {"IMGCLF_ENDPOINT_NAME": "ep-cli", "IMGCLF_ENDPOINT_VARIANT": "AllTraffic"}
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE_URI, model_tarball)
    config = sm.describe_endpoint_config(EndpointConfigName="ep-cli")
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 2)
    assert config["DataCaptureConfig"] == endpoints.DataCapture("s3://models/capture", 35).request()
    aas = aws("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/ep-cli/variant/AllTraffic", 2, 5)  # fmt: skip
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (700.0, 600, 30)
    board = json.loads(aws("cloudwatch").get_dashboard(DashboardName="imgclf-ep-cli")["DashboardBody"])
    assert board == dashboard.dashboard_body("ep-cli", REGION)


def test_deploy_async_sets_the_payload_limit_and_delete_removes_everything(aws, model_tarball, capsys):
    rc = _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-acli", "--async-output",
                          "s3://models/out", "--async-failure", "s3://models/fail", "--async-max-payload-mb", "200",
                          "--autoscale", "1:2", "--delete"))  # fmt: skip
    assert rc == 0, capsys.readouterr()
    # --delete: autoscaling removed first, then endpoint, config and model
    aas = aws("application-autoscaling")
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    sm = aws("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_deploy_async_request_and_environment(aws, model_tarball, capsys):
    rc = _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-async2", "--async-output",
                          "s3://models/out"))  # fmt: skip
    assert rc == 0, capsys.readouterr()
    sm = aws("sagemaker")
    env = sm.describe_model(ModelName="ep-async2")["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == str(endpoints.DEFAULT_ASYNC_MAX_PAYLOAD_MB)
    config = sm.describe_endpoint_config(EndpointConfigName="ep-async2")
    assert config["AsyncInferenceConfig"] == {"OutputConfig": {"S3OutputPath": "s3://models/out"}}
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"


def test_deploy_serverless_is_sized_from_the_model_in_s3(aws, model_tarball, capsys):
    # 45 MB of weights: 1024 (front-end) + 700 + 2 x 45 = 1814 MB needed, so 1024 MB is refused before any call
    rc = _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-small", "--serverless", "1024"))
    assert rc == 2 and "needs about 1814 MB" in capsys.readouterr().err
    assert aws("sagemaker").list_models()["Models"] == []
    rc = _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-sls-cli", "--serverless", "2048:7"))
    assert rc == 0, capsys.readouterr()
    (variant,) = aws("sagemaker").describe_endpoint_config(EndpointConfigName="ep-sls-cli")["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 7}
    assert "InstanceType" not in variant


def test_deploy_names_a_missing_model_artifact(aws, capsys):
    aws("s3").create_bucket(Bucket="models")
    rc = _imgclf(*_deploy("--model-data", "s3://models/none.tar.gz", "--serverless", "2048"))
    assert rc == 2 and "HeadObject s3://models/none.tar.gz failed" in capsys.readouterr().err


def test_autoscale_command_changes_and_removes_scaling_on_a_live_endpoint(aws, model_tarball, capsys):
    assert _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-live", "--instance-type",
                            "ml.m5.2xlarge")) == 0  # fmt: skip
    capsys.readouterr()
    assert _imgclf("sagemaker", "autoscale", "ep-live", "--autoscale", "1:6", "--region", REGION) == 0
    printed = json.loads(capsys.readouterr().out)
    # the default target comes from the variant's instance type: 8 vCPUs x 20.6 req/s x 0.5 x 60
    assert printed["instance_type"] == "ml.m5.2xlarge"
    assert printed["target_invocations_per_instance_per_minute"] == 4944
    aas = aws("application-autoscaling")
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 4944.0
    argv = ["sagemaker", "autoscale", "ep-live", "--autoscale", "2:3", "--target-invocations", "50",
            "--scale-in-cooldown", "900", "--scale-out-cooldown", "10", "--region", REGION]  # fmt: skip
    assert _imgclf(*argv) == 0
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 3)
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (50.0, 900, 10)
    capsys.readouterr()
    assert _imgclf("sagemaker", "autoscale", "ep-live", "--off", "--region", REGION) == 0
    assert json.loads(capsys.readouterr().out)["autoscaling"] == "removed"
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_autoscale_command_refuses_a_missing_variant_and_a_serverless_endpoint(aws, model_tarball, capsys):
    assert _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-nv")) == 0
    assert _imgclf("sagemaker", "autoscale", "ep-nv", "--autoscale", "1:2", "--variant", "Blue") == 2
    assert "has no variant 'Blue' (it has: AllTraffic)" in capsys.readouterr().err
    assert _imgclf(*_deploy("--model-data", model_tarball, "--endpoint-name", "ep-sv", "--serverless", "3072")) == 0
    assert _imgclf("sagemaker", "autoscale", "ep-sv", "--autoscale", "1:2") == 2
    assert "is serverless: it scales by itself" in capsys.readouterr().err


def test_predict_async_command_prints_the_answer(aws, moto_url, image, capsys):
    aws("s3").create_bucket(Bucket="inputs")
    _queue_async_results(moto_url, [{"data": json.dumps(ANSWER)}])
    argv = ["predict", str(image), "--endpoint-name", "ep-async", "--async", "--async-input", "s3://inputs/in",
            "--async-timeout", "30", "--json"]  # fmt: skip
    assert _imgclf(*argv) == 0
    captured = capsys.readouterr()
    (result,) = json.loads(captured.out)
    assert result["predictions"] == ANSWER["predictions"][0] and result["output"].startswith("s3://")
    assert "done" in captured.err  # the progress indicator's last state


def test_predict_realtime_refuses_a_body_over_6_mb_before_sending(aws, image, capsys):
    assert _imgclf("predict", str(image), "--endpoint-name", "ep", "--region", REGION) == 2
    assert "7.0 MB; realtime endpoints accept at most 6 MB" in capsys.readouterr().err
