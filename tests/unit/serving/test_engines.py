"""Engine choice (auto picks the fastest validated engine; anything unusable falls back to eager) on a CPU and on a
CUDA device, the eager engine's channels_last and fp16 forms (on the CPU: torch runs both there), the ONNX Runtime
engine on a tiny hand-made graph, and a torch-free import of the serving engine and preprocessing modules."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys

import numpy as np
import pytest

from imgclf import checksums
from imgclf.serving import engines as e

pytestmark = pytest.mark.unit


def _record(eager=30.0, onnx=20.0, int8=12.0, onnx_file="model.onnx", int8_file="model.int8.onnx"):
    kept = {}
    if onnx is not None:
        kept["onnx"] = {"file": onnx_file, "sha256": "", "p50_ms": onnx}
    if int8 is not None:
        kept["int8"] = {"file": int8_file, "sha256": "", "p50_ms": int8}
    return {"eager": {"p50_ms": eager}, "engines": kept, "rejected": {}}


def test_auto_picks_the_fastest_validated_engine():
    assert e.choose_engine("auto", _record()) == "int8"
    assert e.choose_engine("auto", _record(int8=None)) == "onnx"
    assert e.choose_engine("auto", _record(eager=5.0)) == "eager"


def test_auto_without_any_export_is_eager():
    assert e.choose_engine("auto", None) == "eager"
    assert e.choose_engine("auto", {}) == "eager"


def test_an_engine_the_export_rejected_falls_back_to_eager_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert e.choose_engine("int8", _record(int8=None)) == "eager"
    assert "int8" in caplog.text and "falling back to eager" in caplog.text


def test_explicit_engines_and_unknown_names():
    assert e.choose_engine("onnx", _record()) == "onnx"
    assert e.choose_engine("EAGER", _record()) == "eager"
    with pytest.raises(ValueError, match="Unknown engine"):
        e.choose_engine("tensorrt", _record())


ALL = e.Runtimes(torch=True, onnxruntime=True, onnx_cuda=True)  # the CUDA image with onnxruntime-gpu
NO_ORT_CUDA = e.Runtimes(torch=True, onnxruntime=True, onnx_cuda=False)


def _cuda_record(eager=None, fp16=None, onnx=None, fp16_kept=True):
    """A record as an export on a GPU writes it: CPU p50s, plus cuda_p50_ms where given (None: not timed there)."""
    record = _record()
    if eager is not None:
        record["eager"]["cuda_p50_ms"] = eager
    if fp16_kept:
        record["engines"]["fp16"] = {"file": "model.pt", "sha256": "", "precision": "fp16"}
        if fp16 is not None:
            record["engines"]["fp16"]["cuda_p50_ms"] = fp16
    if onnx is not None:
        record["engines"]["onnx"]["cuda_p50_ms"] = onnx
    return record


def test_auto_on_a_gpu_without_cuda_timings_is_eager_because_the_recorded_latencies_are_cpu_ones():
    # int8 is fastest on the CPU (12 ms) and onnx is validated, but nothing was timed on a GPU
    assert e.choose_engine("auto", _record(), "cuda:0", ALL) == "eager"
    assert e.choose_engine("auto", None, "cuda:0", ALL) == "eager"


def test_auto_on_a_gpu_prefers_a_validated_fp16_when_nothing_was_timed_there():
    assert e.choose_engine("auto", _cuda_record(), "cuda:0", ALL) == "fp16"
    assert e.choose_engine("auto", _cuda_record(fp16_kept=False), "cuda:0", ALL) == "eager"


@pytest.mark.parametrize(
    "timings, runtimes, chosen",
    [
        ({"eager": 2.0, "fp16": 1.0, "onnx": 1.5}, ALL, "fp16"),
        ({"eager": 2.0, "fp16": 1.0, "onnx": 0.5}, ALL, "onnx"),
        ({"eager": 2.0, "fp16": 1.0, "onnx": 0.5}, NO_ORT_CUDA, "fp16"),  # onnx's 0.5 ms needs the CUDA provider
        ({"eager": 0.9, "fp16": 1.0, "onnx": 1.5}, ALL, "eager"),
        ({"eager": 2.0, "onnx": 1.5, "fp16_kept": False}, ALL, "onnx"),
    ],
)
def test_auto_on_a_gpu_picks_the_fastest_engine_timed_on_cuda(timings, runtimes, chosen):
    assert e.choose_engine("auto", _cuda_record(**timings), "cuda:0", runtimes) == chosen


def test_auto_on_a_gpu_without_torch_uses_onnx_on_the_cuda_provider_or_the_cpu():
    no_torch = e.Runtimes(torch=False, onnxruntime=True, onnx_cuda=True)
    assert e.choose_engine("auto", _cuda_record(eager=2.0, fp16=1.0, onnx=1.5), "cuda:0", no_torch) == "onnx"
    cpu_only = e.Runtimes(torch=False, onnxruntime=True, onnx_cuda=False)
    assert e.choose_engine("auto", _cuda_record(), "cuda", cpu_only) == "onnx"


def test_fp16_is_never_a_cpu_engine(caplog):
    record = _cuda_record(eager=2.0, fp16=1.0)
    record["engines"]["fp16"]["p50_ms"] = 0.1  # even if a record said it were fastest there
    assert e.choose_engine("auto", record, "cpu", ALL) == "int8"
    with caplog.at_level(logging.WARNING):
        assert e.choose_engine("fp16", record, "cpu", ALL) == "eager"
    assert "needs torch and a CUDA device" in caplog.text


def test_explicit_fp16_on_a_gpu_is_used_only_when_validated(caplog):
    assert e.choose_engine("fp16", _cuda_record(), "cuda:0", ALL) == "fp16"
    with caplog.at_level(logging.WARNING):
        assert e.choose_engine("fp16", _record(), "cuda:0", ALL) == "eager"
    assert "not validated" in caplog.text


def test_channels_last_eager_predicts_what_the_plain_model_predicts():
    import torch

    from imgclf.model import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    plain = e.EagerEngine(copy.deepcopy(model), "cpu")
    channels_last = e.EagerEngine(copy.deepcopy(model), "cpu", channels_last=True)
    assert not plain.channels_last and channels_last.channels_last
    assert channels_last.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    expected = plain.predict(batch)
    np.testing.assert_allclose(channels_last.predict(batch), expected, rtol=1e-4, atol=1e-6)
    assert list(channels_last.predict(batch).argmax(axis=1)) == list(expected.argmax(axis=1))


def test_the_fp16_engine_runs_a_half_copy_and_answers_float32_probabilities():
    import torch

    from imgclf.model import build_model

    torch.manual_seed(0)
    eager = e.EagerEngine(build_model("resnet18", 10).eval(), "cpu")
    fp16 = eager.half_copy()  # torch runs fp16 convolutions on the CPU too, so this is the real forward pass
    assert (fp16.name, fp16.precision, eager.precision) == ("fp16", "fp16", "fp32")
    assert fp16.model.conv1.weight.dtype == torch.float16
    assert eager.model.conv1.weight.dtype == torch.float32  # the eager engine's model is left as it was
    batch = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    probs = fp16.predict(batch)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, eager.predict(batch), atol=5e-3)


def test_without_onnxruntime_auto_is_eager(monkeypatch):
    monkeypatch.setattr(e, "runtime_installed", lambda name: name == "eager")
    assert e.choose_engine("auto", _record()) == "eager"


def test_without_torch_auto_uses_a_validated_onnx_engine_or_says_why_not(monkeypatch):
    monkeypatch.setattr(e, "runtime_installed", lambda name: name != "eager")
    assert e.choose_engine("auto", _record(eager=1.0)) == "int8"
    assert e.choose_engine("auto", _record(), device="cuda") == "onnx"
    with pytest.raises(e.EngineUnavailable, match="torch is not installed"):
        e.choose_engine("auto", _record(onnx=None, int8=None))


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probs = e.softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], dtype=np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert probs[0, 0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """(N, 3, 4, 4) -> mean per channel -> (N, 3) logits: a graph whose answer is known."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_engine_predicts_softmax_of_the_graph(tiny_onnx):
    pytest.importorskip("onnxruntime")
    engine = e.OnnxEngine.load(tiny_onnx, threads=1)
    batch = np.zeros((2, 3, 4, 4), dtype=np.float32)
    batch[0, 2] = 5.0
    batch[1, 0] = 3.0
    probs = engine.predict(batch)
    assert probs.shape == (2, 3) and list(probs.argmax(axis=1)) == [2, 0]
    np.testing.assert_allclose(probs, e.softmax(batch.mean(axis=(2, 3))), rtol=1e-5)
    assert engine.device == "cpu"


def test_onnx_engine_refuses_a_file_that_changed_since_validation(tiny_onnx):
    pytest.importorskip("onnxruntime")
    with pytest.raises(e.EngineUnavailable, match="sha256"):
        e.OnnxEngine.load(tiny_onnx, sha256="0" * 64)
    assert e.OnnxEngine.load(tiny_onnx, sha256=checksums.sha256_file(tiny_onnx)).name == "onnx"


def test_onnx_engine_on_cuda_without_the_cuda_provider_runs_on_cpu(tiny_onnx, caplog):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with caplog.at_level(logging.WARNING):
        assert e.OnnxEngine.load(tiny_onnx, device="cuda:0").device == "cpu"
    assert "no CUDA provider" in caplog.text


def test_load_engine_uses_the_chosen_onnx_file(tiny_onnx):
    pytest.importorskip("onnxruntime")
    record = {"eager": {"p50_ms": 50.0}, "engines": {"onnx": {"file": tiny_onnx.name, "p50_ms": 1.0}}}
    assert e.load_engine(tiny_onnx.parent, record).name == "onnx"


def test_load_engine_falls_back_to_eager_when_the_file_is_missing(artifact_dir, caplog):
    record = {"eager": {"p50_ms": 50.0}, "engines": {"int8": {"file": "model.int8.onnx", "p50_ms": 1.0}}}
    with caplog.at_level(logging.WARNING):
        engine = e.load_engine(artifact_dir, record, threads=1)
    assert engine.name == "eager" and "falling back to eager" in caplog.text
    probs = engine.predict(np.zeros((2, 3, 32, 32), dtype=np.float32))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_engines_and_preprocess_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import imgclf.serving.engines, imgclf.serving.preprocess\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_choosing_on_a_cpu_does_not_import_onnxruntime():
    """The CUDA provider is looked for only for a CUDA device: an eager CPU worker keeps onnxruntime out of memory."""
    code = (
        "import sys\n"
        "from imgclf.serving import engines\n"
        "assert engines.choose_engine('auto', None, 'cpu') == 'eager'\n"
        "print('onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
