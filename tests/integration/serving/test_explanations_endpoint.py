"""Explanations through real MMS (`imgclf serve`): a Grad-CAM heat map and overlay on request, nothing on a plain
request, a 400 beyond MAX_EXPLAINED_IMAGES, a batch-transform JSON lines body, a multi-model endpoint model, and
maps that light up a digit pasted into a corner (a real artifact of a model trained for seconds)."""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
from PIL import Image
from support import corner_digits as cd
from support.served import http

from imgclf.explain import MAX_EXPLAINED_IMAGES

pytestmark = pytest.mark.integration

EXPLAIN = {"X-Amzn-SageMaker-Custom-Attributes": "explain=gradcam"}


@pytest.fixture(scope="module")
def flavour() -> str:
    """Explanations need torch: the torch flavour only (the torch-free refusal, a 4xx naming the image that has
    them, is tests/unit/serving/test_torch_free_serving.py and tests/container/test_serve_cpu_container.py)."""
    return "torch"


def digit_png(sample_data, digit: int) -> bytes:
    return sorted((sample_data / "test" / str(digit)).glob("*.png"))[0].read_bytes()


def assert_explained(answer: dict, n_images: int) -> None:
    """One explanation per image, for its top-1 class: a 0..1 map of the target layer and a PNG overlay."""
    assert len(answer["predictions"]) == len(answer["explanations"]) == n_images
    for preds, (exp,) in zip(answer["predictions"], answer["explanations"], strict=True):
        assert (exp["method"], exp["index"], exp["label"]) == ("gradcam", preds[0]["index"], preds[0]["label"])
        heat = exp["heatmap"]
        assert len(heat) >= 2 and all(0 <= v <= 1 for row in heat for v in row) and max(map(max, heat)) in (0, 1)
        overlay = Image.open(io.BytesIO(base64.b64decode(exp["overlay_png"])))
        assert overlay.format == "PNG" and min(overlay.size) >= 224


def test_explain_on_request_plain_without_and_a_400_beyond_the_limit(server, sample_data):
    png = digit_png(sample_data, 3)
    status, headers, body = server.invoke(png, accept="application/json", **EXPLAIN)
    assert status == 200 and headers["content-type"].startswith("application/json"), body
    answer = json.loads(body)
    assert_explained(answer, 1)
    assert answer["explanations"][0][0]["layer"] == "layer3"  # ResNet-18 at 32 px: layer4 is already 1x1

    status, _, body = server.invoke(png, accept="application/json")
    assert status == 200 and "explanations" not in json.loads(body)
    assert json.loads(body)["predictions"] == answer["predictions"]

    many = json.dumps({"instances": [base64.b64encode(png).decode()] * (MAX_EXPLAINED_IMAGES + 1)}).encode()
    status, _, body = server.invoke(many, "application/json", accept="application/json", **EXPLAIN)
    assert status == 400 and f"limited to {MAX_EXPLAINED_IMAGES} images".encode() in body, body
    assert "Traceback" not in server.output() and "Encoding failed" not in server.output()


def test_a_batch_transform_json_lines_body_is_explained_through_the_accept_parameter(server, sample_data):
    """Batch transform sets Accept, not CustomAttributes: explain=gradcam travels as an Accept parameter."""
    lines = [json.dumps({"image": base64.b64encode(digit_png(sample_data, d)).decode()}) for d in (1, 7)]
    status, _, body = server.invoke(
        "\n".join(lines).encode() + b"\n", "application/jsonlines", accept="application/json; explain=gradcam"
    )
    assert status == 200, body
    assert_explained(json.loads(body), 2)


def test_a_multi_model_endpoint_model_is_explained(serve, trained_model, tmp_path, sample_data):
    store = tmp_path / "models"
    shutil.copytree(trained_model, store / "digits" / "model")
    s = serve(store, "--multi-model")
    s.wait_healthy()
    status, _, body = http(
        "POST", f"{s.url}/models?url={store / 'digits' / 'model'}&model_name=digits&initial_workers=1&synchronous=true"
    )
    assert status == 200, body
    png = digit_png(sample_data, 5)
    headers = {"Content-Type": "image/png", "Accept": "application/json"}
    status, _, body = http("POST", f"{s.url}/models/digits/invoke", png, {**headers, **EXPLAIN})
    assert status == 200, body
    assert_explained(json.loads(body), 1)
    status, _, body = http("POST", f"{s.url}/models/digits/invoke", png, headers)
    assert status == 200 and "explanations" not in json.loads(body)


@pytest.mark.parametrize("arch", sorted(cd.RECIPES))
def test_the_hottest_cell_lies_on_a_digit_pasted_into_a_corner(serve, tmp_path, arch):
    """The issue's "done when": through the real server and a real artifact (64 px, mean 0 / std 1, no resize), the
    explained map of each canvas is hottest in the quadrant that holds the digit."""
    steps, lr = cd.RECIPES[arch]
    s = serve(cd.save(cd.trained(arch, steps, lr), arch, tmp_path / "model"))
    s.wait_healthy()
    hits, missed = cd.explained_hits(
        lambda body: s.invoke(body, "application/json", accept="application/json", **EXPLAIN)[::2]
    )
    assert hits >= cd.MIN_HITS, f"{arch}: the hottest cell missed the digit {cd.PROBES - hits} times: {missed}"
