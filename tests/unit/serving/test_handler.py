"""The TorchServe-shaped handler on a real artifact with MMS's real Context: answers, batching, bad input."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from support.handler_calls import CLASSES, call, call_one, image_bytes

from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler

pytestmark = pytest.mark.unit


class ForwardRecorder:
    """A forward hook on the real model: the batch size of every forward pass."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self._h = model.register_forward_hook(lambda _m, inputs, _o: self.sizes.append(inputs[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._h.remove()


def test_png_request_answers_json_top5_with_artifact_labels(handler):
    status, ct, body = call_one(handler, image_bytes())
    assert (status, ct) == (200, "application/json")
    (preds,) = json.loads(body)["predictions"]
    assert len(preds) == 5 and all(p["label"] == CLASSES[p["index"]] for p in preds)
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_handler_answers_like_the_model_in_process(handler):
    img = image_bytes()
    _, _, body = call_one(handler, img, accept="application/x-npy")
    served = np.load(io.BytesIO(body))
    from PIL import Image

    from imgclf.images import eval_transform  # torchvision's transform: the reference the handler must equal

    x = eval_transform(handler.meta)(Image.open(io.BytesIO(img)).convert("RGB"))[None]
    with torch.no_grad():
        expected = torch.softmax(handler.model(x), 1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_several_images_in_one_request_are_one_forward_pass(handler):
    b64 = base64.b64encode(image_bytes()).decode()
    body = json.dumps({"instances": [b64] * 7}).encode()
    with ForwardRecorder(handler.model) as rec:
        status, _, out = call_one(handler, body, "application/json")
    assert status == 200 and len(json.loads(out)["predictions"]) == 7
    assert rec.sizes == [7]


def test_an_mms_batch_of_requests_is_one_forward_pass_and_a_bad_one_fails_alone(handler):
    good = (image_bytes(), {"Content-Type": "image/png"})
    requests = [good, (b"garbage", {"Content-Type": "image/jpeg"}), good, (b"x", {"Content-Type": "text/csv"}), good]
    with ForwardRecorder(handler.model) as rec:
        answers = call(handler, requests)
    assert [a[0] for a in answers] == [200, 400, 200, 415, 200]
    assert rec.sizes == [3]
    assert b"not an image" in answers[1][2]


@pytest.mark.parametrize(
    "body,ct,accept,status",
    [
        (b"", "image/jpeg", None, 400),
        (b"\x89PNG\r\n\x1a\n broken", "image/png", None, 400),
        (b"{}", "application/json", None, 400),
        (b'{"url": "http://example.com/dog.jpg"}', "application/json", None, 400),
        (image_bytes(), "text/plain", None, 415),
        (image_bytes(), "image/png", "text/csv", 406),
    ],
)
def test_bad_input_gets_its_4xx_and_the_next_request_is_answered(handler, body, ct, accept, status):
    got, ct_out, msg = call_one(handler, body, ct, accept)
    assert got == status and ct_out == "text/plain" and msg.strip()
    assert call_one(handler, image_bytes())[0] == 200


def test_float_tensor_of_the_wrong_size_is_400_with_the_expected_shape(handler):
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 3, 64, 64), np.float32))
    status, _, msg = call_one(handler, buf.getvalue(), "application/x-npy")
    assert status == 400 and b"(3, 32, 32)" in msg


def test_probabilities_on_request_via_custom_attributes(handler):
    status, _, body = call_one(handler, image_bytes(), X_Amzn_SageMaker_Custom_Attributes="output=probabilities")
    rows = json.loads(body)
    assert status == 200 and len(rows) == 1 and len(rows[0]) == 10 and abs(sum(rows[0]) - 1) < 1e-4


def test_handler_loads_whatever_model_dir_the_server_gives(tmp_path, caplog):
    from support.handler_calls import mms_context

    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.model import build_model

    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 48), ["a", "b", "c"], tmp_path)
    h = ImageClassifierHandler(HandlerSettings(engine="fp16"))  # fp16 is a GPU engine: eager fp32 on the CPU
    with caplog.at_level("INFO"):
        h.initialize(mms_context(tmp_path, [{}]))
    status, _, body = call_one(h, image_bytes())
    assert status == 200 and {p["label"] for p in json.loads(body)["predictions"][0]} == {"a", "b", "c"}
    assert "engine eager (fp32) on cpu" in caplog.text  # the choice and its precision are logged


def test_handler_service_worker_exits_instead_of_reporting_ready_without_a_model(tmp_path):
    (tmp_path / "imgclf.json").write_text("{}")
    code = (
        "from mms.context import Context\n"
        "from imgclf.serving.handler_service import HandlerService\n"
        f"HandlerService().initialize(Context('m', {str(tmp_path)!r}, None, 1, None, 'x'))\n"
        "print('still alive')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "still alive" not in proc.stdout
    assert "could not load the model" in proc.stderr


def test_imgclf_jpeg_draft_on_decodes_a_large_jpeg_in_draft_mode_and_off_does_not(artifact_dir, handler):
    """Off (the default fixture): the full decode, torchvision's tensor; on: the drafted decode's tensor."""
    from PIL import Image
    from support.handler_calls import mms_context

    from imgclf.images import eval_transform
    from imgclf.serving.preprocess import Preprocessing, Preprocessor, open_for_model

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (450, 600, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    drafting = ImageClassifierHandler(HandlerSettings(jpeg_draft=True))
    drafting.initialize(mms_context(artifact_dir, [{}]))
    drafted = Preprocessor(Preprocessing.from_meta(handler.meta), draft=True)
    inputs = {
        "full": eval_transform(handler.meta)(Image.open(io.BytesIO(data)).convert("RGB"))[None],
        "drafted": torch.from_numpy(drafted(open_for_model(io.BytesIO(data), drafted)))[None],
    }
    with torch.no_grad():
        expected = {k: torch.softmax(handler.model(x), 1).numpy() for k, x in inputs.items()}
    assert np.abs(expected["full"] - expected["drafted"]).max() > 1e-4  # the two paths are told apart
    for h, which in ((handler, "full"), (drafting, "drafted")):
        _, _, body = call_one(h, data, content_type="image/jpeg", accept="application/x-npy")
        np.testing.assert_allclose(np.load(io.BytesIO(body)), expected[which], atol=1e-5)
