"""Fixtures for the imgclf.sagemaker unit tests (main venv: the SageMaker SDK is NOT installed here; the SDK
objects themselves are checked under tests/localmode, with real SDK v2/v3 in their own venvs)."""

from __future__ import annotations

import pytest

from imgclf.sagemaker.target import BUCKET_ENV, ROLE_ENV


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
        ROLE_ENV,
        BUCKET_ENV,
        "SAGEMAKER_USER_CONFIG_OVERRIDE",
    ):
        # setenv first records the variable, so whatever the test sets later (prepare_local_env writes to
        # os.environ on purpose) is removed again afterwards instead of leaking into the next test.
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
