"""The serving side without torch, as the CPU serving image runs it: the handler serves an exported ONNX engine,
an explanation gets a 4xx naming the image that has them, and `imgclf serve` refuses a model with no exported
engine at start-up. Each check runs in a subprocess where `import torch` fails (sys.modules['torch'] = None)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from support import REPO
from support.handler_calls import image_bytes

pytestmark = pytest.mark.unit

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLASSES = ["a", "b", "c"]


def _channel_mean_graph(path, size: int) -> None:
    """(N, 3, S, S) -> per-channel mean -> (N, 3) logits: a 3-class "model" whose answer is known."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "channel-mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory):
    """A real artifact (model.pt, imgclf.json, index) plus a validated ONNX engine recorded in imgclf.json."""
    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.export import save_record
    from imgclf.model import build_model
    from imgclf.serving.engines import sha256_file

    out = tmp_path_factory.mktemp("exported")
    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 32), CLASSES, out)
    _channel_mean_graph(out / "model.onnx", 32)
    record = {
        "eager": {"p50_ms": 50.0},
        "engines": {"onnx": {"file": "model.onnx", "sha256": sha256_file(out / "model.onnx"), "p50_ms": 1.0}},
        "rejected": {},
    }
    save_record(out, record)
    return out


def run_without_torch(code: str, **env: str) -> subprocess.CompletedProcess:
    prelude = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
    paths = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": paths, **env},
    )


HANDLER = """
    import json, sys
    from support.handler_calls import call_one, mms_context
    from imgclf.serving.environment import HandlerSettings
    from imgclf.serving.handler import ImageClassifierHandler

    handler = ImageClassifierHandler(HandlerSettings.from_env())
    handler.initialize(mms_context(sys.argv[1] if len(sys.argv) > 1 else {model_dir!r}, [{{}}]))
    body = open({image!r}, "rb").read()
    plain = call_one(handler, body, accept="application/x-npy")
    explained = call_one(handler, body, X_Amzn_SageMaker_Custom_Attributes="explain=gradcam")
    print(json.dumps({{"engine": handler.engine.name, "plain": [plain[0], plain[2].hex()],
                      "explained": [explained[0], explained[2].decode()]}}))
"""


def test_the_handler_serves_the_onnx_engine_and_refuses_explanations_naming_the_image(exported_dir, tmp_path):
    from PIL import Image

    from imgclf.images import eval_transform
    from imgclf.serving.engines import softmax

    image = tmp_path / "image.png"
    image.write_bytes(image_bytes(size=(50, 40)))
    out = run_without_torch(HANDLER.format(model_dir=str(exported_dir), image=str(image)))
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["engine"] == "onnx"
    status, npy = answer["plain"]
    assert status == 200
    import io

    served = np.load(io.BytesIO(bytes.fromhex(npy)))
    # The reference: torchvision's eval transform (with torch, here) and the graph's known answer.
    from imgclf.artifact import load_meta

    x = eval_transform(load_meta(exported_dir))(Image.open(image).convert("RGB")).numpy()
    np.testing.assert_allclose(served, softmax(x.mean(axis=(1, 2))[None]), atol=1e-5)
    status, message = answer["explained"]
    assert 400 <= status < 500
    assert "PyTorch" in message and "imgclf-serve" in message


def test_serve_refuses_a_model_without_an_exported_engine_at_start_up(exported_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.pt", "index_to_name.json"):
        (bare / name).write_bytes((exported_dir / name).read_bytes())
    meta = json.loads((exported_dir / "imgclf.json").read_text())
    del meta["export"]
    (bare / "imgclf.json").write_text(json.dumps(meta))
    code = """
        import sys
        from imgclf.cli import main
        sys.exit(main(["serve", "--model-dir", sys.argv[1], "--port", "1"]))
    """
    out = run_without_torch(code.replace("sys.argv[1]", repr(str(bare))))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "no exported inference engine" in out.stderr and "imgclf export" in out.stderr
    eager = run_without_torch(code.replace("sys.argv[1]", repr(str(exported_dir))), IMGCLF_ENGINE="eager")
    assert eager.returncode == 2 and "needs PyTorch" in eager.stderr
