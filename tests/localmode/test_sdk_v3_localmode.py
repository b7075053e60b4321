"""Smoke test 5: SDK v3 (`sagemaker>=3`) — ModelTrainer(Mode.LOCAL_CONTAINER) trains with imgclf-train, and a
v3 LocalSession endpoint (CreateModel/CreateEndpoint API) on imgclf-serve answers a JPEG with the right top-1."""

from __future__ import annotations

import tarfile

import pytest
from support.localmode import CONTAINER_HYPERPARAMETERS, jpeg_samples, local_top1, top1

pytestmark = pytest.mark.localmode


def test_v3_model_trainer_local_container_trains_and_v3_local_endpoint_answers(
    localmode, train_image, torch_serve_image, sample_data, small_sample, tmp_path
):
    labels = jpeg_samples(sample_data, tmp_path / "jpegs", per_class=1)
    result, output, seconds = localmode.driver(
        "v3_train_serve",
        sdk=3,
        args={
            "workdir": str(localmode.workdir / "sagemaker-local"),
            "train_image": train_image,
            "serve_image": torch_serve_image,
            "hyperparameters": CONTAINER_HYPERPARAMETERS,
            "channels": {name: str(small_sample / name) for name in ("train", "valid")},
            "images": list(labels),
        },
    )
    print(
        f"SMOKE 5 v3: {seconds:.1f} s (train {result['train_seconds']:.1f} s, deploy {result['deploy_seconds']:.1f} s)"
    )
    assert result["trainer_class"] == "ModelTrainer"
    assert "epoch=1 train_loss=" in output
    model_dir = tmp_path / "model"
    with tarfile.open(result["model_tar"]) as t:
        assert {"model.pt", "index_to_name.json", "imgclf.json"} <= set(t.getnames())
        t.extractall(model_dir, filter="data")
    expected = local_top1(model_dir, list(labels))
    for path, answer in result["answers"].items():
        assert answer["status"] == 200, answer
        assert top1(answer["json"]) == expected[path]
    assert result["stopped_seconds"] is not None and result["stopped_seconds"] < 15
