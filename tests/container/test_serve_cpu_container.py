"""What only the torch-free CPU serving image (Dockerfile.serve-cpu) has to show, on the model the train container
trained and exported (export-engines on, as by default): JPEG predictions with the same top-1 as the eager model,
an explanation request answered 4xx naming the image that has them, a model without exported engines refused at
start-up, and the image's size (the reason it exists) under 1 GB. The serving contract itself (ping, content
types, bad input, SIGTERM, tampered artifacts, async and serverless settings, request metrics) runs against this
image too: test_serve_container.py and test_production_endpoints.py are parametrized over both flavours."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image
from support import containers as sm
from support.training import sample_jpeg_bytes

pytestmark = pytest.mark.container

MAX_IMAGE_BYTES = 1_000_000_000


@pytest.fixture(scope="module")
def server(cpu_image, served_model):
    with sm.serve(served_model, cpu_image) as srv:
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


def test_jpeg_predictions_match_the_eager_top1(server, served_model, container_sample):
    assert server.ping() == 200
    jpegs = _jpegs(container_sample)
    served = []
    for body in jpegs:
        status, payload = server.invoke(body, "image/jpeg")
        assert status == 200, payload[:500]
        served.append(json.loads(payload)["predictions"][0][0]["label"])
    assert served == _eager_top1(served_model, jpegs)


def test_an_explanation_is_a_client_error_naming_the_image_that_has_them(server, container_sample):
    status, payload = server.invoke(_jpegs(container_sample, 1)[0], "image/jpeg", "application/json; explain=gradcam")
    assert 400 <= status < 500, (status, payload[:500])
    assert b"PyTorch" in payload and b"imgclf-serve" in payload


def test_a_model_without_exported_engines_stops_at_start_up_saying_why(cpu_image, served_model, tmp_path):
    bare = tmp_path / "model"
    shutil.copytree(served_model, bare)
    meta = json.loads((bare / "imgclf.json").read_text())
    del meta["export"]
    (bare / "imgclf.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="no exported inference engine"):
        with sm.serve(bare, cpu_image, startup_timeout=120):
            pass
