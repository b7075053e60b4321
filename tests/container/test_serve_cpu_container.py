"""The torch-free CPU serving image (Dockerfile.serve-cpu) on a model the train container trained and exported
(export-engines on, as by default): /ping, JPEG predictions with the same top-1 as the eager model, a bad image
and an explanation request answered 4xx, a model without exported engines refused at start-up, and the image's
size (the reason it exists) under 1 GB."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image
from support import containers as sm
from support.training import FAST_HYPERPARAMETERS, sample_jpeg_bytes

pytestmark = pytest.mark.container

MAX_IMAGE_BYTES = 1_000_000_000


@pytest.fixture(scope="module")
def exported_model(images, container_sample, tmp_path_factory):
    """`docker run imgclf-train train` with export-engines on, handed over as model.tar.gz like SageMaker does."""
    channels = {name: container_sample / name for name in ("train", "valid", "test")}
    hyperparameters = {**FAST_HYPERPARAMETERS, "export-engines": "true"}
    base = sm.opt_ml(tmp_path_factory.mktemp("opt-ml-export"), channels, hyperparameters)
    result = sm.train(base, images["train"], timeout=1800)
    assert result.returncode == 0, result.output[-3000:]
    print(f"\nCPU image: training run with the export {result.seconds:.0f} s")
    return sm.model_from_tarball(base / "model", tmp_path_factory.mktemp("handoff-cpu"))


@pytest.fixture(scope="module")
def server(cpu_image, exported_model):
    with sm.serve(exported_model, cpu_image) as srv:
        print(f"\nCPU serve container: docker run -> /ping 200 in {srv.started_s:.1f} s")
        yield srv


def _jpegs(sample, per_class: int = 2) -> list[bytes]:
    return sample_jpeg_bytes(sample, per_class)


def _eager_top1(model_dir, jpegs: list[bytes]) -> list[str]:
    """The reference: the eager model and torchvision's eval transform, in this process (the host has torch)."""
    import torch

    from imgclf.artifact import load_artifact
    from imgclf.images import eval_transform

    artifact = load_artifact(model_dir, "cpu")
    transform = eval_transform(artifact.meta)
    batch = torch.stack([transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs])
    with torch.inference_mode():
        indices = artifact.model(batch).argmax(dim=1).tolist()
    return [artifact.index_to_name[i] for i in indices]


def test_the_image_holds_no_torch_and_is_under_1_gb(cpu_image):
    size = int(sm.docker("image", "inspect", "-f", "{{.Size}}", cpu_image).stdout.strip())
    print(f"\n{cpu_image}: {size / 1e6:,.0f} MB")
    assert size < MAX_IMAGE_BYTES, f"{size:,} bytes"
    probe = "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"
    r = sm.docker("run", "--rm", *sm.LABELS, "--entrypoint", "python", cpu_image, "-c", probe)
    assert r.stdout.split() == ["True", "True"]


def test_ping_and_jpeg_predictions_match_the_eager_top1(server, exported_model, container_sample):
    assert server.ping() == 200
    jpegs = _jpegs(container_sample)
    served = []
    for body in jpegs:
        status, payload = server.invoke(body, "image/jpeg")
        assert status == 200, payload[:500]
        served.append(json.loads(payload)["predictions"][0][0]["label"])
    assert served == _eager_top1(exported_model, jpegs)


def test_a_bad_image_is_a_client_error(server):
    status, payload = server.invoke(b"\xff\xd8\xff\xe0 truncated, not a JPEG", "image/jpeg")
    assert 400 <= status < 500, (status, payload[:500])
    assert server.ping() == 200


def test_an_explanation_is_a_client_error_naming_the_image_that_has_them(server, container_sample):
    status, payload = server.invoke(_jpegs(container_sample, 1)[0], "image/jpeg", "application/json; explain=gradcam")
    assert 400 <= status < 500, (status, payload[:500])
    assert b"PyTorch" in payload and b"imgclf-serve" in payload


def test_a_model_without_exported_engines_stops_at_start_up_saying_why(cpu_image, exported_model, tmp_path):
    bare = tmp_path / "model"
    shutil.copytree(exported_model, bare)
    meta = json.loads((bare / "imgclf.json").read_text())
    del meta["export"]
    (bare / "imgclf.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="no exported inference engine"):
        with sm.serve(bare, cpu_image, startup_timeout=120):
            pass
