"""imgclf.sagemaker.sdk_v3 without the SDK: deploy_v3's three API calls and the missing-SDK error.

ModelTrainer itself is checked under tests/localmode with the real SDK v3 (drivers/v3_train_serve.py).
"""

from __future__ import annotations

import pytest
from support.sdk import sdk_installed

from imgclf.errors import UserError
from imgclf.sagemaker import sdk_v3
from imgclf.sagemaker.target import resolve_target

pytestmark = pytest.mark.unit


def test_deploy_v3_creates_model_endpoint_config_and_endpoint_of_one_name():
    calls = []

    class Client:
        def __getattr__(self, name):
            return lambda **kw: calls.append((name, kw))

    got = sdk_v3.deploy_v3(
        Client(), name="ep", image_uri="img", model_data="file:///m.tar.gz", role="arn:r", instance_type="local"
    )
    assert got == "ep"
    assert [c[0] for c in calls] == ["create_model", "create_endpoint_config", "create_endpoint"]
    assert calls[0][1]["PrimaryContainer"] == {"Image": "img", "ModelDataUrl": "file:///m.tar.gz", "Environment": {}}
    assert calls[1][1]["ProductionVariants"][0]["ModelName"] == "ep"
    assert calls[2][1] == {"EndpointName": "ep", "EndpointConfigName": "ep"}


@pytest.mark.skipif(sdk_installed(), reason="the SDK is installed here")
def test_model_trainer_without_the_sdk_says_how_to_install_it(tmp_path):
    with pytest.raises(UserError, match="SageMaker Python SDK is not installed"):
        sdk_v3.build_model_trainer(resolve_target(local=True, workdir=tmp_path), data={"train": str(tmp_path)})
