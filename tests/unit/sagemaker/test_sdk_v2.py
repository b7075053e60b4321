"""imgclf.sagemaker.sdk_v2 without the SDK: the request preview, channel inputs and the missing-SDK error.

The SDK objects themselves (Estimator, HyperparameterTuner, Model, Transformer) are checked under
tests/localmode with the real SDK v2 (drivers/tuner.py compares the requests).
"""

from __future__ import annotations

import pytest
from support.sdk import sdk_installed

from imgclf.errors import UserError
from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.target import file_uri, resolve_target

pytestmark = pytest.mark.unit


class FakeSession:
    """The two public Session methods a launch ends in, which must not be reached by a preview."""

    def create_tuning_job(self, **request):
        raise AssertionError("a preview must not send the request")

    def train(self, **request):
        raise AssertionError("a preview must not send the request")

    def upload_data(self, path, bucket, key_prefix):
        return f"s3://{bucket}/{key_prefix}"


class FakeTuner:
    """What the SDK's HyperparameterTuner.fit(wait=False) does at the end: one create_tuning_job call."""

    def __init__(self):
        self.sagemaker_session = FakeSession()

    def fit(self, inputs, job_name=None, wait=True):
        assert wait is False
        self.sagemaker_session.create_tuning_job(job_name=job_name, tuning_config={"max_jobs": 4}, inputs=inputs)


def test_tuner_request_records_the_request_fit_would_send_and_restores_the_session():
    tuner = FakeTuner()
    got = sdk_v2.tuner_request(tuner, {"train": "s3://b/train/"}, job_name="preview")
    assert got == {"job_name": "preview", "tuning_config": {"max_jobs": 4}, "inputs": {"train": "s3://b/train/"}}
    assert "create_tuning_job" not in vars(tuner.sagemaker_session)
    with pytest.raises(AssertionError, match="must not send"):
        tuner.sagemaker_session.create_tuning_job()


def test_training_request_records_the_train_call():
    class FakeEstimator:
        sagemaker_session = FakeSession()

        def fit(self, inputs, job_name=None, wait=True):
            self.sagemaker_session.train(job_name=job_name, input_config=inputs)

    got = sdk_v2.training_request(FakeEstimator(), {"train": "s3://b/t/"}, job_name="j")
    assert got == {"job_name": "j", "input_config": {"train": "s3://b/t/"}}


def test_channel_inputs_are_file_uris_in_local_mode_and_uploads_on_sagemaker(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    chans = {"train": str(tmp_path / "train"), "valid": "s3://b/v/"}
    local = resolve_target(local=True, workdir=tmp_path / "w")
    assert sdk_v2.channel_inputs(chans, local, FakeSession()) == {
        "train": file_uri(tmp_path / "train"),
        "valid": "s3://b/v/",
    }
    remote = resolve_target(
        local=False, role="arn:aws:iam::1:role/R", bucket="b", region="us-east-1", check_credentials=False
    )
    assert sdk_v2.channel_inputs(chans, remote, FakeSession()) == {
        "train": "s3://b/imgclf/data/train",
        "valid": "s3://b/v/",
    }


@pytest.mark.skipif(sdk_installed(), reason="the SDK is installed here")
def test_builders_without_the_sdk_say_how_to_install_it(tmp_path):
    with pytest.raises(UserError, match="SageMaker Python SDK is not installed"):
        sdk_v2.build_estimator(resolve_target(local=True, workdir=tmp_path))
