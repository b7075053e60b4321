"""launch.py's plain-data builders and its errors, in the main venv where the SageMaker SDK is NOT installed.

The SDK objects themselves are checked under tests/localmode (real SDK v2/v3 in their own venvs).
"""

from __future__ import annotations

import importlib.util

import pytest

from imgclf import cli, launch
from imgclf.diagnostics import DEBUGGER_RULES, PROFILER_RULES
from imgclf.errors import UserError
from imgclf.hyperparameters import Hyperparameters
from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVES

pytestmark = pytest.mark.unit


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No role, bucket, region or credentials anywhere boto3 looks."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        launch.ROLE_ENV,
        launch.BUCKET_ENV,
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)


def test_job_hyperparameters_are_validated_strings_of_only_the_given_values():
    hps = launch.job_hyperparameters({"batch_size": 128, "train-backbone": True, "learning-rate": "0.01"})
    assert hps == {"lr": "0.01", "batch-size": "128", "train-backbone": "true"}
    # What the container gets back parses to the same typed values.
    assert Hyperparameters.from_mapping(hps).batch_size == 128
    assert launch.job_hyperparameters() == {}
    with pytest.raises(UserError, match="Unknown hyperparameter"):
        launch.job_hyperparameters({"momentum": 0.9})
    with pytest.raises(UserError, match="batch-size"):
        launch.job_hyperparameters({"batch-size": "big"})


def test_objective_directions_and_unknown_objective():
    assert launch.objective("valid_accuracy") == ("valid_accuracy", "Maximize")
    assert launch.objective("valid_loss") == ("valid_loss", "Minimize")
    assert {d["Name"] for d in METRIC_DEFINITIONS} >= set(OBJECTIVES)
    with pytest.raises(UserError, match="valid_accuracy"):
        launch.objective("test_accuracy")


def test_debugger_collections_follow_the_debug_hyperparameters():
    assert launch.debugger_collections() == {"losses": {"train.save_interval": "100", "eval.save_interval": "10"}}
    got = launch.debugger_collections({"debug-collections": "losses,weights", "debug-train-interval": "5"})
    assert set(got) == {"losses", "weights"} and got["weights"]["train.save_interval"] == "5"


def test_seed_rules_and_profiler_interval():
    assert DEBUGGER_RULES == (
        "loss_not_decreasing",
        "vanishing_gradient",
        "overfit",
        "overtraining",
        "poor_weight_initialization",
    )
    assert PROFILER_RULES == ("LowGPUUtilization", "ProfilerReport")
    assert launch.PROFILER_INTERVAL_MS == 500


def test_channels_from_a_data_folder_s3_prefix_or_explicit_channels(tmp_path):
    for name in ("train", "valid"):
        (tmp_path / name / "a").mkdir(parents=True)
    assert launch.channels(str(tmp_path)) == {"train": str(tmp_path / "train"), "valid": str(tmp_path / "valid")}
    assert launch.channels("s3://b/p/") == {
        "train": "s3://b/p/train/",
        "valid": "s3://b/p/valid/",
        "test": "s3://b/p/test/",
    }
    assert launch.channels(None, train="s3://b/t/") == {"train": "s3://b/t/"}
    with pytest.raises(UserError, match="no train/"):
        launch.channels(str(tmp_path / "train"))
    with pytest.raises(UserError, match="No training data"):
        launch.channels(None)
    with pytest.raises(UserError, match="not a directory"):
        launch.channels(None, train=str(tmp_path / "missing"))


def test_real_sagemaker_without_role_bucket_region_or_credentials_names_each_missing_thing(no_aws):
    with pytest.raises(UserError) as err:
        launch.resolve_target(local=False, action="imgclf sagemaker train")
    msg = str(err.value)
    for needed in ("IAM execution role", "--role", "S3 bucket", "--bucket", "AWS region", "AWS credentials", "--local"):
        assert needed in msg, (needed, msg)


def test_real_sagemaker_rejects_a_role_that_is_not_an_arn(no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(UserError, match="role ARN"):
        launch.resolve_target(local=False, role="MySageMakerRole", bucket="b", region="us-east-1")
    t = launch.resolve_target(local=False, role="arn:aws:iam::1:role/R", bucket="s3://b/", region="us-east-1")
    assert (t.bucket, t.output_path("training")) == ("b", "s3://b/imgclf/training")


def test_local_target_needs_no_aws_and_writes_file_uris(no_aws, tmp_path):
    t = launch.resolve_target(local=True, workdir=tmp_path / "w")
    assert t.role == launch.LOCAL_ROLE and t.region == "us-east-1"
    assert t.output_path("training") == "file://" + str((tmp_path / "w" / "training").resolve())


@pytest.mark.skipif(importlib.util.find_spec("sagemaker") is not None, reason="the SDK is installed here")
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
