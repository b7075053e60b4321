"""Response formats: Accept negotiation (406), top-k schema, probabilities, npy, JSON lines."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from imgclf.serving import encoders
from imgclf.serving.errors import ClientError

pytestmark = pytest.mark.unit

NAMES = {i: f"c{i}" for i in range(4)}
PROBS = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]], np.float32)


def fmt(accept=None, custom=None, default="application/json"):
    return encoders.negotiate(accept, custom, default, 5)


def test_default_is_json_top5_and_star_means_the_configured_default():
    assert fmt() == encoders.ResponseFormat("application/json", "top_k", 5)
    assert fmt("*/*", default="application/x-npy").content_type == "application/x-npy"


def test_accept_parameters_and_custom_attributes_choose_k_and_output():
    assert fmt("application/json; top_k=3").top_k == 3
    assert fmt("application/json", "top_k=2,output=probabilities") == encoders.ResponseFormat(
        "application/json", "probabilities", 2
    )
    assert fmt("text/html, application/json;q=0.9").content_type == "application/json"


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/xml"])
def test_unsupported_accept_is_406(accept):
    with pytest.raises(ClientError) as info:
        fmt(accept)
    assert info.value.status_code == 406 and accept in info.value.message


@pytest.mark.parametrize(
    "accept", ["application/json; top_k=0", "application/json; top_k=x", "application/json; output=raw"]
)
def test_bad_options_are_400(accept):
    with pytest.raises(ClientError) as info:
        fmt(accept)
    assert info.value.status_code == 400


def test_json_top_k_schema_is_sorted_label_index_probability():
    body = json.loads(encoders.encode(PROBS, encoders.ResponseFormat("application/json", "top_k", 2), NAMES))
    assert body == {
        "predictions": [
            [
                {"label": "c1", "index": 1, "probability": pytest.approx(0.6)},
                {"label": "c2", "index": 2, "probability": pytest.approx(0.2)},
            ],
            [
                {"label": "c0", "index": 0, "probability": pytest.approx(0.7)},
                {"label": "c1", "index": 1, "probability": pytest.approx(0.1)},
            ],
        ]
    }


def test_k_larger_than_classes_gives_every_class():
    body = json.loads(encoders.encode(PROBS, encoders.ResponseFormat("application/json", "top_k", 50), NAMES))
    assert len(body["predictions"][0]) == 4


def test_probabilities_output_is_a_row_per_image_for_seed_clients():
    body = json.loads(encoders.encode(PROBS, encoders.ResponseFormat("application/json", "probabilities", 5), NAMES))
    assert np.argmax(body, 1).tolist() == [1, 0]


def test_npy_answer_round_trips_the_probabilities():
    body = encoders.encode(PROBS, encoders.ResponseFormat("application/x-npy", "top_k", 5), NAMES)
    np.testing.assert_allclose(np.load(io.BytesIO(body)), PROBS)


def test_jsonlines_answer_has_one_line_per_image():
    body = encoders.encode(PROBS, encoders.ResponseFormat("application/jsonlines", "top_k", 1), NAMES)
    lines = body.decode().splitlines()
    assert [json.loads(line)[0]["label"] for line in lines] == ["c1", "c0"]
