"""`imgclf demo`'s back-ends without a browser: in-process answers, a remote server's answers and refusals, and
the one-line messages a refused file gets (the page itself, which needs gradio, is tested in tests/browser)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from support.stub_endpoint import stub_endpoint

from imgclf import demo
from imgclf.artifact import ModelMeta, save_artifact
from imgclf.errors import UserError
from imgclf.model import build_model
from imgclf.serving import errors

pytestmark = pytest.mark.unit


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-model")
    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 32), ["a", "b", "c"], out)
    return demo.LocalBackend(out)


def test_in_process_answers_top_k_latency_and_an_overlay(local):
    result = local.classify(_png(), "image/png", 2, explain=True)
    assert [p["label"] for p in result.predictions] != [] and len(result.predictions) == 2
    assert result.overlay is not None and result.overlay.size == (224, 224)
    assert 0 < result.explain_ms < result.latency_ms
    plain = local.classify(_png(), "image/png", 3, explain=False)
    assert plain.overlay is None and plain.explain_ms is None and len(plain.predictions) == 3


def test_a_non_image_gets_the_servers_own_message(local):
    with pytest.raises(errors.ClientError) as err:
        local.classify(b"just some text\n", "application/x-image", 3, explain=True)
    assert "not an image" in demo.describe_error(err.value)


def test_a_bug_is_named_not_traced():
    assert demo.describe_error(KeyError("x")) == "Internal error (KeyError); see the demo's log."
    assert demo.describe_error(UserError("Cannot reach http://x")) == "Cannot reach http://x"


@pytest.fixture
def stub():
    with stub_endpoint() as endpoint:
        yield endpoint


def test_a_server_is_asked_for_gradcam_in_custom_attributes_and_its_refusal_is_readable(stub):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    answer = {
        "predictions": [[{"label": "3", "index": 3, "probability": 0.9}]],
        "explanations": [[{"overlay_png": base64.b64encode(buf.getvalue()).decode()}]],
    }
    stub.answers = [(200, json.dumps(answer).encode()), (400, b"The body (4 bytes) is not an image.\n")]
    result = demo.RemoteBackend(url=stub.url).classify(_png(), "image/png", 1, explain=True)
    assert result.predictions[0]["label"] == "3" and result.overlay.size == (8, 8)
    assert [h.get("X-Amzn-SageMaker-Custom-Attributes") for h in stub.seen] == ["top_k=1,explain=gradcam"]
    with pytest.raises(UserError, match="400 Bad Request: The body .* is not an image"):
        demo.RemoteBackend(url=stub.url).classify(b"text", "application/x-image", 1, explain=False)


def test_examples_are_one_sample_test_image_per_digit(tmp_path):
    examples = demo.sample_examples(tmp_path)
    assert [p.split("/")[-1] for p in examples] == [f"digit-{d}.png" for d in range(10)]


def test_a_small_image_is_shown_upscaled_with_square_pixels_and_a_large_one_as_it_is():
    digit = Image.new("L", (8, 8)).convert("RGB")
    digit.putpixel((3, 4), (255, 255, 255))
    shown = demo.for_display(digit)
    assert shown.size == (224, 224) and shown.getpixel((3 * 28 + 5, 4 * 28 + 20)) == (255, 255, 255)
    big = Image.new("RGB", (400, 300))
    assert demo.for_display(big) is big
