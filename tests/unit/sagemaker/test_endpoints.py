"""Production endpoint options (imgclf.sagemaker.endpoints / autoscaling / dashboard / aws_errors): the options'
refusals, and every request dict validated against botocore's service model (the same check boto3
runs before sending). The calls themselves run against moto in tests/integration/test_endpoints_moto.py; the SDK v2
objects are built in .venv-sdk2 (a subprocess: SDK v2 is not installed in this venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import botocore.exceptions
import botocore.session
import pytest
from botocore.validate import validate_parameters

from imgclf.errors import UserError
from imgclf.sagemaker import autoscaling, dashboard, endpoints
from imgclf.sagemaker.aws_errors import aws_call, user_error
from imgclf.serving import request_metrics

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
SNS = "arn:aws:sns:us-east-1:123456789012:imgclf-done"
SNS_ERR = "arn:aws:sns:us-east-1:123456789012:imgclf-failed"


def valid(service: str, operation: str, params: dict) -> dict:
    """Raise ParamValidationError unless `params` fit the operation's input shape."""
    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(params, model.operation_model(operation).input_shape)
    return params


# ---- serverless ------------------------------------------------------------------------------------------------


def test_serverless_spec_parses_memory_and_concurrency():
    assert endpoints.parse_serverless("3072:10").request() == {"MemorySizeInMB": 3072, "MaxConcurrency": 10}
    assert endpoints.parse_serverless("2048") == endpoints.Serverless(2048, endpoints.DEFAULT_SERVERLESS_CONCURRENCY)


@pytest.mark.parametrize("spec", ["1500", "512", "7168", "2048:0", "2048:201", "big", "2048:x"])
def test_serverless_spec_outside_what_sagemaker_allows_is_refused(spec):
    with pytest.raises(UserError, match="--serverless|Serverless"):
        endpoints.parse_serverless(spec)


def test_serverless_refuses_gpu_too_little_memory_big_payloads_and_capture_in_one_message():
    with pytest.raises(UserError) as exc:
        endpoints.check_serverless(
            endpoints.Serverless(1024),
            instance_type="ml.g5.xlarge",
            needed_mb=1900,
            max_payload_mb=20,
            data_capture=True,
        )
    msg = str(exc.value)
    assert "CPU only" in msg and "ml.g5.xlarge" in msg
    assert "needs about 1900 MB" in msg and "--serverless 2048" in msg
    assert "4 MB" in msg and "--async-output" in msg
    assert "data capture" in msg


def test_serverless_memory_above_the_largest_size_says_to_use_instances():
    with pytest.raises(UserError, match="deploy on instances"):
        endpoints.check_serverless(endpoints.Serverless(6144), needed_mb=7000)


def test_payload_limits_per_endpoint_kind():
    endpoints.check_payload(5 * 2**20, "realtime")
    with pytest.raises(UserError, match="--async-output"):
        endpoints.check_payload(5 * 2**20, "serverless")
    endpoints.check_payload(500 * 2**20, "async")
    with pytest.raises(UserError, match="at most 1024 MB"):
        endpoints.check_payload(1025 * 2**20, "async")


# ---- async and capture -----------------------------------------------------------------------------------------


def test_async_config_request_has_output_failure_topics_and_concurrency():
    a = endpoints.AsyncInference("s3://b/out/", "s3://b/fail", SNS, SNS_ERR, 4)
    assert a.request() == {
        "OutputConfig": {
            "S3OutputPath": "s3://b/out",
            "S3FailurePath": "s3://b/fail",
            "NotificationConfig": {"SuccessTopic": SNS, "ErrorTopic": SNS_ERR},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    assert endpoints.AsyncInference("s3://b/out").request() == {"OutputConfig": {"S3OutputPath": "s3://b/out"}}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output_path": "b/out"}, "--async-output must be an s3://"),
        ({"output_path": "s3://"}, "--async-output"),
        ({"output_path": "s3://b/o", "success_topic": "my-topic"}, "SNS topic ARN"),
        ({"output_path": "s3://b/o", "max_concurrent_per_instance": 0}, "1..1000"),
    ],
)
def test_async_config_mistakes_are_named(kwargs, match):
    with pytest.raises(UserError, match=match):
        endpoints.AsyncInference(**kwargs)


def test_no_bucket_for_the_default_async_output_is_a_clear_error():
    with pytest.raises(UserError, match="--async-output s3://... or --bucket"):
        endpoints.default_async_output(None, "imgclf", "ep")
    assert endpoints.default_async_output("b", "imgclf", "ep") == "s3://b/imgclf/async/ep/output"


def test_data_capture_request_captures_json_answers_as_text():
    assert endpoints.DataCapture("s3://b/capture/", 50).request() == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 50,
        "DestinationS3Uri": "s3://b/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json", "application/jsonlines", "application/x-jsonlines"],
        },
    }
    with pytest.raises(UserError, match="0..100"):
        endpoints.DataCapture("s3://b/c", 101)


# ---- the whole CreateEndpointConfig, against the service model --------------------------------------------------


def _configs():
    capture = endpoints.DataCapture("s3://b/capture", 20)
    async_ = endpoints.AsyncInference("s3://b/out", "s3://b/fail", SNS, SNS_ERR, 2)
    return {
        "realtime": endpoints.endpoint_config_request("ep", "m", instance_type="ml.m5.large", instance_count=2),
        "capture": endpoints.endpoint_config_request("ep", "m", instance_type="ml.m5.large", data_capture=capture),
        "async": endpoints.endpoint_config_request(
            "ep", "m", instance_type="ml.g4dn.xlarge", async_inference=async_, data_capture=capture
        ),
        "serverless": endpoints.endpoint_config_request("ep", "m", serverless=endpoints.Serverless(3072, 8)),
    }


@pytest.mark.parametrize("kind", ["realtime", "capture", "async", "serverless"])
def test_endpoint_config_requests_fit_the_sagemaker_service_model(kind):
    request = valid("sagemaker", "CreateEndpointConfig", _configs()[kind])
    (variant,) = request["ProductionVariants"]
    assert ("ServerlessConfig" in variant) == (kind == "serverless")
    assert ("InstanceType" in variant) == (kind != "serverless")


def test_the_service_model_would_refuse_what_our_checks_refuse():
    """The validator is not a rubber stamp: a serverless memory outside 1024..6144 fails it too."""
    bad = _configs()["serverless"]
    bad["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] = 512
    with pytest.raises(botocore.exceptions.ParamValidationError):
        valid("sagemaker", "CreateEndpointConfig", bad)


def test_serverless_with_async_or_without_instance_type_is_refused():
    with pytest.raises(UserError, match="Choose one"):
        endpoints.endpoint_config_request(
            "ep", "m", serverless=endpoints.Serverless(2048), async_inference=endpoints.AsyncInference("s3://b/o")
        )
    with pytest.raises(UserError, match="--instance-type"):
        endpoints.endpoint_config_request("ep", "m")


# ---- autoscaling ------------------------------------------------------------------------------------------------


def test_autoscale_spec_and_the_measured_default_target():
    s = autoscaling.parse_autoscale("1:4", instance_type="ml.m5.large")
    assert (s.min_capacity, s.max_capacity) == (1, 4)
    assert s.target_invocations == round(20.6 * 2 * 0.5 * 60) == 1236  # benchmarks: 41.3 req/s on 2 vCPUs
    assert autoscaling.parse_autoscale("3", instance_type="ml.c5.2xlarge").target_invocations == 4944
    assert autoscaling.parse_autoscale("2:3", instance_type="x", target_invocations=100).target_invocations == 100


@pytest.mark.parametrize("spec", ["4:2", "0:2", "a:b", "1:2:3", ""])
def test_bad_autoscale_spec_is_refused(spec):
    with pytest.raises(UserError, match="--autoscale"):
        autoscaling.parse_autoscale(spec, instance_type="ml.m5.large")


def test_autoscaling_requests_fit_the_application_autoscaling_service_model():
    s = autoscaling.Autoscaling(1, 4, 600, 120, 30)
    target = valid("application-autoscaling", "RegisterScalableTarget", autoscaling.scalable_target_request("ep", s))
    assert target["ResourceId"] == "endpoint/ep/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    policy = valid("application-autoscaling", "PutScalingPolicy", autoscaling.scaling_policy_request("ep", s))
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert (config["TargetValue"], config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (600.0, 120, 30)
    ids = {k: target[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")}
    valid("application-autoscaling", "DeregisterScalableTarget", ids)
    valid("application-autoscaling", "DeleteScalingPolicy", {"PolicyName": policy["PolicyName"], **ids})


# ---- dashboard ---------------------------------------------------------------------------------------------------


def test_dashboard_body_fits_put_dashboard_and_names_the_servers_metrics():
    body = dashboard.dashboard_body("ep", "us-east-1", is_async=True)
    valid("cloudwatch", "PutDashboard", {"DashboardName": "imgclf-ep", "DashboardBody": json.dumps(body)})
    ours = [m for w in body["widgets"] for m in w["properties"]["metrics"] if m[0] == request_metrics.NAMESPACE]
    assert {m[1] for m in ours} >= set(request_metrics.TIMINGS)
    assert all(m[2::2] == request_metrics.BASE_DIMENSIONS for m in ours)  # the dimensions the EMF lines carry
    assert any("ApproximateBacklogSizePerInstance" in m for w in body["widgets"] for m in w["properties"]["metrics"])


# ---- errors users hit -------------------------------------------------------------------------------------------


def _client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "CreateEndpointConfig")


@pytest.mark.parametrize(
    "exc, expected",
    [
        (_client_error("ResourceLimitExceeded", "account-level service limit 'ml.g5.xlarge for endpoint usage' is 0"),
         "Service Quotas"),
        (_client_error("ValidationException", "Could not find model 'm'"), "Could not find model 'm'"),
        (_client_error("AccessDeniedException", "not authorized to perform: sagemaker:CreateEndpointConfig"),
         "lack the permission"),
        (botocore.exceptions.NoRegionError(), "--region"),
        (botocore.exceptions.NoCredentialsError(), "aws configure"),
    ],
)  # fmt: skip
def test_aws_errors_become_user_errors_that_say_what_to_do(exc, expected):
    def fail(**_):
        raise exc

    with pytest.raises(UserError, match=expected):
        aws_call("CreateEndpointConfig ep", fail, EndpointConfigName="ep")
    assert "CreateEndpointConfig ep" in str(user_error("CreateEndpointConfig ep", exc))


# ---- SDK v2 objects (in .venv-sdk2) -----------------------------------------------------------------------------

SDK2_DRIVER = f"""
import json, os
SNS, SNS_ERR = {SNS!r}, {SNS_ERR!r}
os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
from imgclf.sagemaker import endpoints as e
s = e.Serverless(3072, 8)
a = e.AsyncInference("s3://b/out", "s3://b/fail", SNS, SNS_ERR, 2)
c = e.DataCapture("s3://b/capture", 30)
serverless = e.deploy_kwargs_v2(instance_type=None, serverless=s)
full = e.deploy_kwargs_v2(instance_type="ml.m5.large", instance_count=2, async_inference=a, data_capture=c)
print(json.dumps({{
    "serverless_keys": sorted(serverless),
    "serverless": serverless["serverless_inference_config"]._to_request_dict(),
    "full_keys": sorted(full),
    "async": full["async_inference_config"]._to_request_dict(),
    "capture": full["data_capture_config"]._to_request_dict(),
    "ours": {{"serverless": s.request(), "async": a.request(), "capture": c.request()}},
}}))
"""


def _sdk2_python() -> Path | None:
    for root in (REPO, Path(sys.executable).parent.parent.parent):
        if (root / ".venv-sdk2" / "bin" / "python").exists():
            return root / ".venv-sdk2" / "bin" / "python"
    return None


@pytest.mark.skipif(_sdk2_python() is None, reason=".venv-sdk2 missing (bash scripts/sdk_venvs.sh)")
def test_sdk_v2_objects_send_the_same_requests_as_the_boto3_path():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "AWS_DEFAULT_REGION": "us-east-1"}
    r = subprocess.run([str(_sdk2_python()), "-c", SDK2_DRIVER], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["serverless_keys"] == ["serverless_inference_config"]  # no instance type or count
    assert got["full_keys"] == ["async_inference_config", "data_capture_config", "initial_instance_count",
                                "instance_type"]  # fmt: skip
    assert got["serverless"] == got["ours"]["serverless"]
    assert got["async"] == got["ours"]["async"]
    assert got["capture"] == got["ours"]["capture"]
    for kind in ("serverless", "async", "capture"):
        valid("sagemaker", "CreateEndpointConfig", {
            "EndpointConfigName": "ep",
            "ProductionVariants": [{"VariantName": "v", "ModelName": "m",
                                    **({"ServerlessConfig": got["serverless"]} if kind == "serverless" else
                                       {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1})}],
            **({"AsyncInferenceConfig": got["async"]} if kind == "async" else {}),
            **({"DataCaptureConfig": got["capture"]} if kind == "capture" else {}),
        })  # fmt: skip
