"""Train -> export -> serve -> predict: a model trained with export-engines on carries validated ONNX engines in
imgclf.json, and `imgclf serve` with IMGCLF_ENGINE=onnx answers the same top-1 as the eager server on real JPEGs."""

from __future__ import annotations

import json

import pytest
from support.training import sample_jpeg_bytes

pytestmark = pytest.mark.integration

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def flavour() -> str:
    """The comparison sets IMGCLF_ENGINE itself, in the image with torch (both engines must be loadable)."""
    return "torch"


@pytest.fixture(scope="module")
def exported_model(trained_model):
    """The tier's model: trained with the engine export on (conftest.TRAIN_SETTINGS), as a job does by default."""
    return trained_model


def _jpegs(sample_data, per_class: int = 3) -> list[bytes]:
    return sample_jpeg_bytes(sample_data, per_class)


def _top1(server, jpegs: list[bytes]) -> list[str]:
    labels = []
    for body in jpegs:
        status, _, payload = server.invoke(body, "image/jpeg")
        assert status == 200, payload[:500]
        labels.append(json.loads(payload)["predictions"][0][0]["label"])
    return labels


def test_training_exports_validated_engines_into_the_model_dir(exported_model):
    record = json.loads((exported_model / "imgclf.json").read_text())["export"]
    assert "onnx" in record["engines"], record["rejected"]
    for entry in record["engines"].values():
        assert (exported_model / entry["file"]).is_file() and entry["agreement"] >= 0.995


def test_the_onnx_engine_serves_the_same_top1_as_eager(exported_model, sample_data, serve):
    jpegs = _jpegs(sample_data)
    onnx_server = serve(exported_model, env={"IMGCLF_ENGINE": "onnx"})
    eager_server = serve(exported_model, env={"IMGCLF_ENGINE": "eager"})
    onnx_server.wait_healthy()
    eager_server.wait_healthy()
    assert "engine onnx" in onnx_server.output() and "engine eager" in eager_server.output()
    assert _top1(onnx_server, jpegs) == _top1(eager_server, jpegs)
