"""`imgclf sagemaker ...` (imgclf.cli.sagemaker): the errors a user without the SDK or an AWS setup sees."""

from __future__ import annotations

import pytest
from support.sdk import sdk_installed

from imgclf import cli

pytestmark = pytest.mark.unit


@pytest.mark.skipif(sdk_installed(), reason="the SDK is installed here")
def test_cli_without_the_sdk_fails_with_install_instructions(tmp_path, capsys, no_aws):
    (tmp_path / "train" / "a").mkdir(parents=True)
    rc = cli.main(["sagemaker", "train", "--local", "--data", str(tmp_path), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "SageMaker Python SDK is not installed" in err and "scripts/sdk_venvs.sh" in err


def test_cli_for_real_sagemaker_without_aws_setup_exits_2_explaining_what_is_needed(capsys, no_aws):
    rc = cli.main(["sagemaker", "deploy", "--model-data", "s3://b/model.tar.gz"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "imgclf sagemaker deploy calls SageMaker" in err and "--role" in err and "--local" in err


def test_cli_tune_in_local_mode_points_to_the_local_search(capsys, no_aws, tmp_path):
    rc = cli.main(["sagemaker", "tune", "--local", "--data", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert rc == 2
    assert "cannot run tuning jobs" in capsys.readouterr().err


def test_pipeline_approve_and_deploy_model_package_parse(tmp_path):
    parse = lambda argv: cli.build_parser(argv).parse_args(argv)  # noqa: E731
    args = parse(["sagemaker", "pipeline", "--local", "--bucket", "b", "--data", str(tmp_path), "--threshold", "0.9"])
    assert (args.action, args.gate_metric, args.threshold, args.approval_status) == (
        "pipeline",
        "accuracy",
        0.9,
        "PendingManualApproval",
    )
    args = parse(["sagemaker", "approve", "arn:aws:sagemaker:us-east-1:1:model-package/imgclf/1", "--reject"])
    assert args.action == "approve" and args.reject
    args = parse(["sagemaker", "deploy", "--model-package", "arn:aws:sagemaker:us-east-1:1:model-package/imgclf/1"])
    assert args.model_package and args.model_data is None
    with pytest.raises(SystemExit):
        parse(["sagemaker", "deploy", "--model-data", "s3://b/m.tar.gz", "--model-package", "arn"])


def test_approve_rejects_what_is_not_a_model_package_arn(capsys, no_aws):
    rc = cli.main(["sagemaker", "approve", "arn:aws:sagemaker:us-east-1:1:endpoint/x", "--region", "us-east-1"])
    assert rc == 2 and "not a model package ARN" in capsys.readouterr().err
