"""imgclf.sagemaker.target: what a real SageMaker call needs, local mode's target and environment."""

from __future__ import annotations

import os

import pytest
from support.sdk import sdk_installed

from imgclf.errors import UserError
from imgclf.sagemaker import target

pytestmark = pytest.mark.unit


def test_real_sagemaker_without_role_bucket_region_or_credentials_names_each_missing_thing(no_aws):
    with pytest.raises(UserError) as err:
        target.resolve_target(local=False, action="imgclf sagemaker train")
    msg = str(err.value)
    for needed in ("IAM execution role", "--role", "S3 bucket", "--bucket", "AWS region", "AWS credentials", "--local"):
        assert needed in msg, (needed, msg)


def test_real_sagemaker_rejects_a_role_that_is_not_an_arn(no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(UserError, match="role ARN"):
        target.resolve_target(local=False, role="MySageMakerRole", bucket="b", region="us-east-1")
    t = target.resolve_target(local=False, role="arn:aws:iam::1:role/R", bucket="s3://b/", region="us-east-1")
    assert (t.bucket, t.output_path("training")) == ("b", "s3://b/imgclf/training")


def test_local_target_needs_no_aws_and_writes_file_uris(no_aws, tmp_path):
    t = target.resolve_target(local=True, workdir=tmp_path / "w")
    assert t.role == target.LOCAL_ROLE and t.region == "us-east-1"
    assert t.output_path("training") == "file://" + str((tmp_path / "w" / "training").resolve())


def test_uris():
    assert target.is_remote("s3://b/k") and not target.is_remote("file:///x") and not target.is_remote("/x")
    assert target.file_uri("rel") == "file://" + os.path.abspath("rel")


@pytest.mark.skipif(sdk_installed(), reason="the SDK is installed here")
def test_sdk_major_without_the_sdk_says_how_to_install_it():
    with pytest.raises(UserError, match="scripts/sdk_venvs.sh"):
        target.sdk_major()


def test_local_config_keeps_the_sdks_folders_under_the_workdir(no_aws, tmp_path, monkeypatch):
    monkeypatch.setenv(target.LOCAL_SERVING_PORT_ENV, "18080")
    cfg = target.local_config(target.resolve_target(local=True, workdir=tmp_path / "w"))
    assert cfg == {
        "local_code": True,
        "container_root": str((tmp_path / "w" / "containers").resolve()),
        "serving_port": 18080,
    }
    monkeypatch.delenv(target.LOCAL_SERVING_PORT_ENV)
    assert 0 < target.local_serving_port() < 65536


def test_local_env_without_aws_setup_sets_telemetry_off_a_region_and_placeholder_keys(no_aws, tmp_path):
    before = dict(os.environ)
    wanted = target.local_env(tmp_path / "w")
    assert os.environ == before  # computing it writes nothing to the environment
    config = tmp_path / "w" / "sagemaker-config.yaml"
    assert wanted == {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config.resolve()),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": target.PLACEHOLDER_KEY,
        "AWS_SECRET_ACCESS_KEY": target.PLACEHOLDER_KEY,
    }
    assert "TelemetryOptOut: true" in config.read_text()


def test_prepare_local_env_keeps_what_the_user_set(no_aws, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", "/mine.yaml")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert target.prepare_local_env(tmp_path / "w") == {}
    assert os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] == "/mine.yaml" and "AWS_DEFAULT_REGION" not in os.environ


def test_prepare_local_env_sets_what_is_missing(no_aws, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    for var in ("SAGEMAKER_USER_CONFIG_OVERRIDE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "unset")  # recorded, so monkeypatch removes what prepare_local_env sets
        monkeypatch.delenv(var)
    set_now = target.prepare_local_env(tmp_path / "w")
    assert set(set_now) == {"SAGEMAKER_USER_CONFIG_OVERRIDE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(os.environ[k] == v for k, v in set_now.items())
