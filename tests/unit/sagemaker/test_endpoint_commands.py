"""`imgclf sagemaker deploy|autoscale` and `imgclf predict --async`: every production-endpoint flag parsed into the
request it becomes, and what is refused before any AWS call (no AWS here; the calls run against moto in
tests/integration/test_endpoints_moto.py)."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.validate import validate_parameters

from imgclf import cli
from imgclf.cli import endpoint_flags, sagemaker_endpoints
from imgclf.errors import UserError
from imgclf.sagemaker import endpoints

pytestmark = pytest.mark.unit

SNS = "arn:aws:sns:us-east-1:123456789012:done"


def parse(*argv: str):
    return cli.build_parser(list(argv)).parse_args(list(argv))


def deploy_args(*argv: str):
    return parse("sagemaker", "deploy", "--model-data", "s3://b/model.tar.gz", *argv)


def test_every_deploy_flag_reaches_the_endpoint_config_request():
    args = deploy_args("--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--autoscale", "2:5",
                       "--target-invocations", "700", "--scale-in-cooldown", "600", "--scale-out-cooldown", "30",
                       "--async-output", "s3://b/out", "--async-failure", "s3://b/fail", "--async-success-topic", SNS,
                       "--async-error-topic", SNS, "--async-max-concurrency", "3", "--async-max-payload-mb", "200",
                       "--data-capture", "s3://b/cap", "--capture-percent", "35", "--dashboard")  # fmt: skip
    opts = endpoint_flags.options_from_args(args, args.instance_type)
    s = opts.autoscaling
    assert (s.min_capacity, s.max_capacity, s.target_invocations) == (2, 5, 700)
    assert (s.scale_in_cooldown_s, s.scale_out_cooldown_s) == (600, 30) and opts.dashboard
    request = endpoints.endpoint_config_request(
        "ep", "ep", instance_type=args.instance_type, instance_count=args.instance_count,
        async_inference=opts.async_inference, data_capture=opts.data_capture,
    )  # fmt: skip
    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(request, model.operation_model("CreateEndpointConfig").input_shape)
    assert request["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://b/out", "S3FailurePath": "s3://b/fail",
                         "NotificationConfig": {"SuccessTopic": SNS, "ErrorTopic": SNS}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 3},
    }  # fmt: skip
    assert request["DataCaptureConfig"]["InitialSamplingPercentage"] == 35
    assert request["ProductionVariants"][0] == {
        "VariantName": "AllTraffic", "ModelName": "ep", "InstanceType": "ml.c5.xlarge", "InitialInstanceCount": 2,
    }  # fmt: skip
    assert args.async_max_payload_mb == 200


def test_the_model_environment_names_the_endpoint_and_raises_the_async_body_limit():
    assert endpoints.model_environment("ep") == {"IMGCLF_ENDPOINT_NAME": "ep", "IMGCLF_ENDPOINT_VARIANT": "AllTraffic"}
    env = endpoints.model_environment("ep", async_max_payload_mb=endpoints.DEFAULT_ASYNC_MAX_PAYLOAD_MB)
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "100"
    with pytest.raises(UserError, match="1..1024"):
        endpoints.model_environment("ep", async_max_payload_mb=2000)


def test_serverless_memory_is_sized_from_the_artifact(tmp_path):
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"\0" * (45 * 2**20))
    assert sagemaker_endpoints.artifact_bytes(str(tarball), None) == 45 * 2**20
    assert sagemaker_endpoints.artifact_bytes(f"file://{tarball}", None) == 45 * 2**20
    assert endpoints.model_memory_mb(45 * 2**20) == 1024 + 700 + 2 * 45  # front-end + a torch worker
    with pytest.raises(UserError, match="no such file"):
        sagemaker_endpoints.artifact_bytes(str(tmp_path / "none.tar.gz"), None)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--serverless", "2048"], "local mode does not run --serverless"),
        (["--autoscale", "1:2", "--dashboard"], "local mode does not run --autoscale, --dashboard"),
        (["--async-output", "s3://b/o", "--data-capture", "s3://b/c"], "--async-output, --data-capture"),
        (["--serverless", "1024"], "needs about 1824 MB"),  # 50 MB artifact (1024 + 700 + 2 x 50): refused first
    ],
)
def test_local_mode_refuses_what_it_cannot_run(tmp_path, capsys, no_aws, argv, message):
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"\0" * (50 * 2**20))
    rc = cli.main(["sagemaker", "deploy", "--local", "--model-data", str(tarball), "--workdir", str(tmp_path), *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_async_payload_without_async_and_options_with_a_model_package_are_refused(tmp_path, capsys, no_aws):
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"\0")
    argv = ["sagemaker", "deploy", "--local", "--workdir", str(tmp_path)]
    assert cli.main([*argv, "--model-data", str(tarball), "--async-max-payload-mb", "50"]) == 2
    assert "add --async-output" in capsys.readouterr().err
    assert cli.main([*argv, "--model-package", "arn:aws:sagemaker:us-east-1:1:model-package/x/1", "--dashboard"]) == 2
    assert "not with --model-package" in capsys.readouterr().err


def test_autoscale_command_flags():
    args = parse("sagemaker", "autoscale", "ep", "--autoscale", "1:4", "--variant", "Blue", "--target-invocations",
                 "90", "--scale-in-cooldown", "120", "--scale-out-cooldown", "15", "--region", "eu-west-1")  # fmt: skip
    assert (args.action, args.endpoint_name, args.autoscale, args.variant) == ("autoscale", "ep", "1:4", "Blue")
    assert (args.target_invocations, args.scale_in_cooldown, args.scale_out_cooldown) == (90, 120, 15)
    assert parse("sagemaker", "autoscale", "ep", "--off").off
    for argv in (["ep"], ["ep", "--off", "--autoscale", "1:2"]):
        with pytest.raises(SystemExit):
            parse("sagemaker", "autoscale", *argv)


def test_autoscale_off_with_a_target_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert cli.main(["sagemaker", "autoscale", "ep", "--off", "--target-invocations", "5"]) == 2
    assert "--off removes autoscaling" in capsys.readouterr().err


def test_predict_async_flags_and_refusals(tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    args = parse("predict", str(image), "--endpoint-name", "ep", "--async", "--async-input", "s3://b/in",
                 "--async-timeout", "30")  # fmt: skip
    assert (args.use_async, args.async_input, args.async_timeout) == (True, "s3://b/in", 30.0)
    monkeypatch.delenv("IMGCLF_SAGEMAKER_BUCKET", raising=False)
    assert cli.main(["predict", str(image), "--endpoint-name", "ep", "--async"]) == 2
    assert "--async-input s3://BUCKET/PREFIX or set IMGCLF_SAGEMAKER_BUCKET" in capsys.readouterr().err
    assert cli.main(["predict", str(image), "--endpoint-url", "http://x", "--async"]) == 2
    assert "--async needs --endpoint-name" in capsys.readouterr().err
    assert cli.main(["predict", str(image), "--endpoint-url", "http://x", "--async-input", "s3://b/in"]) == 2
    assert "are for --async" in capsys.readouterr().err
    monkeypatch.setenv("IMGCLF_SAGEMAKER_BUCKET", "bkt")
    from imgclf.cli.predict import async_input_location

    assert async_input_location(None) == "s3://bkt/imgclf/async/input"
