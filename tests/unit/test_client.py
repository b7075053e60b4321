"""imgclf.client against a stand-in server: custom attributes go out after top_k, answers come back whole."""

from __future__ import annotations

import json

import pytest
from support.stub_endpoint import stub_endpoint

from imgclf import client
from imgclf.errors import UserError

pytestmark = pytest.mark.unit


@pytest.fixture
def stub():
    with stub_endpoint() as endpoint:
        yield endpoint


HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
ANSWER = {
    "predictions": [[{"label": "3", "index": 3, "probability": 0.9}]],
    "explanations": [[{"method": "gradcam", "index": 3, "heatmap": [[1.0]], "overlay_png": "iVBOR"}]],
}


def test_classify_sends_the_attributes_after_top_k_and_keeps_the_explanations(stub, tmp_path):
    image = tmp_path / "three.png"
    image.write_bytes(b"\x89PNG not really")
    stub.answers = [(200, json.dumps(ANSWER).encode()), (200, json.dumps(ANSWER).encode())]
    (result,) = client.classify([str(image)], 2, endpoint_url=stub.url, attributes="explain=gradcam;class=3")
    assert result == {
        "image": str(image),
        "predictions": ANSWER["predictions"][0],
        "explanations": ANSWER["explanations"][0],
    }
    client.classify([str(image)], 5, endpoint_url=stub.url)
    assert [{k: h.get(k) for k in HEADERS} for h in stub.seen] == [
        {"Content-Type": "image/png", "Accept": "application/json",
         "X-Amzn-SageMaker-Custom-Attributes": "top_k=2,explain=gradcam;class=3"},
        {"Content-Type": "image/png", "Accept": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "top_k=5"},
    ]  # fmt: skip


def test_the_endpoint_returns_the_whole_answer_and_names_a_refusal(stub):
    stub.answers = [(200, json.dumps(ANSWER).encode()), (400, b"explain=gradcam is limited to 4 images\n")]
    endpoint = client.Endpoint(url=stub.url)
    assert endpoint.invoke(b"x", "image/png", "explain=gradcam") == ANSWER
    with pytest.raises(UserError, match=r"answered 400 Bad Request: explain=gradcam is limited to 4 images$"):
        endpoint.invoke(b"x", "image/png")
    assert stub.seen[1].get("X-Amzn-SageMaker-Custom-Attributes") is None


def test_an_answer_outside_the_schema_is_a_user_error(stub):
    stub.answers = [(200, b"<html>proxy</html>")]
    with pytest.raises(UserError, match="not imgclf's JSON schema"):
        client.Endpoint(url=stub.url).invoke(b"x", "image/png")
