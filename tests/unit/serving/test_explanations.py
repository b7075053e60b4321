"""Explanations on request: header and Accept parsing, what is refused (4xx before any work), the JSON fields,
and that a plain request never builds the explainer."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from support.handler_calls import CLASSES, call, call_one, image_bytes

from imgclf.explain import MAX_EXPLAINED_IMAGES
from imgclf.serving import encoders, explanations
from imgclf.serving.errors import ClientError, http_error

pytestmark = pytest.mark.unit

JSON_TOP5 = encoders.ResponseFormat(encoders.JSON, "top_k", 5)
NAMES = dict(enumerate(CLASSES))


def _requested(accept=None, attributes=None, fmt=JSON_TOP5, n=1):
    return explanations.requested(accept, attributes, fmt, n, NAMES)


@pytest.mark.parametrize(
    ("accept", "attributes", "expected"),
    [
        (None, None, None),
        (None, "top_k=3", None),
        (None, "explain=gradcam", explanations.ExplainRequest("gradcam", None)),
        (None, "explain=GradCAM;class=class-7", explanations.ExplainRequest("gradcam", 7)),
        (None, "top_k=2,explain=gradcam,class=3", explanations.ExplainRequest("gradcam", 3)),
        ("application/json; explain=gradcam; class=class-1", None, explanations.ExplainRequest("gradcam", 1)),
        ("application/json; class=class-2", "explain=gradcam;class=class-9", explanations.ExplainRequest("gradcam", 2)),
    ],
)
def test_explain_is_asked_in_custom_attributes_or_as_an_accept_parameter(accept, attributes, expected):
    assert _requested(accept, attributes) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attributes": "explain=shap"}, "supported methods: gradcam"),
        ({"attributes": "class=class-1"}, "send it with explain=gradcam"),
        ({"attributes": "explain=gradcam;class=zebra"}, "not one of this model's 10 classes"),
        ({"attributes": "explain=gradcam", "fmt": encoders.ResponseFormat(encoders.NPY, "top_k", 5)}, "x-npy"),
        ({"attributes": "explain=gradcam", "fmt": encoders.ResponseFormat(encoders.JSON, "probabilities", 5)}, ""),
        ({"attributes": "explain=gradcam", "n": MAX_EXPLAINED_IMAGES + 1}, f"limited to {MAX_EXPLAINED_IMAGES}"),
    ],
)
def test_what_cannot_be_explained_is_a_400_with_the_reason(kwargs, message):
    with pytest.raises(ClientError) as err:
        _requested(**kwargs)
    status, _, text = http_error(err.value)
    assert status == 400 and message in text


def test_an_explained_request_answers_the_map_and_the_overlay_for_top1_and_the_named_class(handler):
    status, ct, body = call_one(handler, image_bytes(), X_Amzn_SageMaker_Custom_Attributes="explain=gradcam;class=4")
    assert (status, ct) == (200, "application/json")
    answer = json.loads(body)
    (preds,), (exps,) = answer["predictions"], answer["explanations"]
    top1 = preds[0]["index"]
    assert [e["index"] for e in exps] == ([top1] if top1 == 4 else [top1, 4])
    first = exps[0]
    assert first["method"] == "gradcam" and first["label"] == CLASSES[top1] and first["layer"] == "layer3"
    assert len(first["heatmap"]) == 2 and all(0 <= v <= 1 for row in first["heatmap"] for v in row)
    assert Image.open(io.BytesIO(base64.b64decode(first["overlay_png"]))).format == "PNG"


def test_explain_in_an_mms_batch_touches_only_its_own_request(handler):
    png = image_bytes()
    plain = (png, {"Content-Type": "image/png"})
    explained = (png, {"Content-Type": "image/png", "Accept": "application/json; explain=gradcam"})
    too_many = (
        json.dumps({"instances": [base64.b64encode(png).decode()] * (MAX_EXPLAINED_IMAGES + 1)}).encode(),
        {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "explain=gradcam"},
    )
    answers = call(handler, [plain, explained, too_many, plain])
    assert [a[0] for a in answers] == [200, 200, 400, 200]
    assert "explanations" not in json.loads(answers[0][2]) and "explanations" in json.loads(answers[1][2])
    assert json.loads(answers[0][2]) == json.loads(answers[3][2])
    assert b"limited to" in answers[2][2]


def test_plain_requests_never_build_the_explainer(artifact_dir):
    from support.handler_calls import mms_context

    from imgclf.serving.environment import HandlerSettings
    from imgclf.serving.handler import ImageClassifierHandler

    fresh = ImageClassifierHandler(HandlerSettings())
    fresh.initialize(mms_context(artifact_dir, [{}]))
    assert call_one(fresh, image_bytes())[0] == 200
    assert fresh.explainer._cam is None


def test_a_model_without_a_feature_map_is_a_400_naming_it():
    import numpy as np
    import torch

    from imgclf.model import build_model

    vit = build_model("vit_b_16", 2, model_kwargs={"image_size": 32}).eval()
    explainer = explanations.Explainer(vit, "vit_b_16", (3, 32, 32), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(Exception) as err:
        explainer.explain(torch.zeros(1, 3, 32, 32), np.array([[0.4, 0.6]]), _requested(None, "explain=gradcam"), {})
    status, _, text = http_error(err.value)
    assert status == 400 and "vit_b_16" in text


def test_a_vit_endpoint_answers_an_explain_request_400_naming_it_without_logging_a_server_fault(tmp_path, caplog):
    """Refused while the request is checked (before the forward pass), so the encoder's 5xx path never logs it."""
    from support.handler_calls import mms_context

    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.model import build_model
    from imgclf.serving.environment import HandlerSettings
    from imgclf.serving.handler import ImageClassifierHandler

    meta = ModelMeta.for_training("vit_b_16", 2, 32)
    save_artifact(build_model("vit_b_16", 2, model_kwargs=dict(meta.model_kwargs)), meta, CLASSES[:2], tmp_path)
    vit = ImageClassifierHandler(HandlerSettings())
    vit.initialize(mms_context(tmp_path, [{}]))
    with caplog.at_level("DEBUG"):
        status, _, body = call_one(vit, image_bytes(), X_Amzn_SageMaker_Custom_Attributes="explain=gradcam")
        plain = call_one(vit, image_bytes())
    assert status == 400 and b"vit_b_16" in body and b"explain=gradcam" in body
    assert plain[0] == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
