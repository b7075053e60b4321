"""imgclf.export: ONNX and int8 engines are exported next to model.pt, validated against eager on the validation
images, timed, recorded with their checksums; a candidate that disagrees with eager is dropped with its reason."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from imgclf import checksums, export  # noqa: E402
from imgclf.artifact import ModelMeta, save_artifact  # noqa: E402
from imgclf.model import build_model  # noqa: E402
from imgclf.serving import engines  # noqa: E402

pytestmark = pytest.mark.unit

CLASSES = [str(d) for d in range(10)]
FAST = {"max_valid": 48, "calibration_images": 16, "latency_runs": 3, "threads": 1, "device": "cpu"}


def _artifact(out, seed: int):
    import torch

    torch.manual_seed(seed)
    save_artifact(build_model("resnet18", 10), ModelMeta.for_training("resnet18", 10, 32), CLASSES, out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_data):
    model_dir = _artifact(tmp_path_factory.mktemp("exported"), seed=0)
    record = export.export_engines(model_dir, sample_data / "valid", sample_data / "train", **FAST)
    return model_dir, record


def test_both_engines_are_kept_with_checksum_agreement_latency_and_size(exported):
    model_dir, record = exported
    assert set(record["engines"]) == {"onnx", "int8"}, record["rejected"]
    for entry in record["engines"].values():
        path = model_dir / entry["file"]
        assert path.is_file()
        assert entry["sha256"] == checksums.sha256_file(path)
        assert entry["agreement"] >= export.MIN_AGREEMENT
        assert abs(entry["accuracy"] - record["eager"]["accuracy"]) <= export.MAX_ACCURACY_DROP
        assert entry["p50_ms"] > 0 and entry["p95_ms"] >= entry["p50_ms"]
        assert entry["size_bytes"] == path.stat().st_size
    assert record["engines"]["int8"]["size_bytes"] < record["engines"]["onnx"]["size_bytes"] / 2
    assert record["validation"]["images"] == 48 and record["validation"]["calibration_images"] == 16
    assert not list(model_dir.glob("*.tmp"))


def test_on_a_cpu_fp16_is_rejected_as_needing_a_cuda_device_and_nothing_is_timed_on_cuda(exported):
    model_dir, record = exported
    assert "fp16" not in record["engines"]
    assert "CUDA device" in record["rejected"]["fp16"]
    assert record["validation"]["device"] == "cpu" and "gpu" not in record["validation"]
    assert all("cuda_p50_ms" not in entry for entry in [record["eager"], *record["engines"].values()])
    assert (model_dir / "model.pt").is_file()  # the rejected fp16's "file" is model.pt: never deleted


def test_an_fp16_only_export_on_a_cpu_writes_no_onnx_and_keeps_nothing(sample_data, tmp_path):
    model_dir = _artifact(tmp_path / "fp16", seed=0)
    record = export.export_engines(model_dir, sample_data / "valid", candidates=["fp16"], **FAST)
    assert record["engines"] == {} and set(record["rejected"]) == {"fp16"}
    assert sorted(p.name for p in model_dir.iterdir() if p.suffix in {".onnx", ".pt"}) == ["model.pt"]


def test_fp16_passes_the_validation_a_gpu_export_applies(exported, sample_data):
    """The check export_engines runs on a CUDA device, run here on the CPU (torch has fp16 convolutions there)."""
    from imgclf.serving.preprocess import Preprocessing, Preprocessor

    model_dir, record = exported
    eager = engines.EagerEngine.load(model_dir, threads=1)
    preprocessor = Preprocessor(Preprocessing.from_meta(eager_meta(model_dir)), draft=False)
    images, labels = export.load_images(sample_data / "valid", CLASSES, preprocessor, 48, "valid")
    reference = export.predictions(eager.predict, images)
    scores, reason = export.validate(eager.half_copy().predict, images, labels, reference, record["eager"]["accuracy"])
    assert reason is None, reason
    assert scores["agreement"] >= export.MIN_AGREEMENT
    assert scores["accuracy"] == pytest.approx(record["eager"]["accuracy"], abs=export.MAX_ACCURACY_DROP)
    assert export.validate(eager.predict, images, labels, 1 - reference, 1.0)[1].startswith("top-1 agreement")


def eager_meta(model_dir):
    from imgclf.artifact import load_meta

    return load_meta(model_dir)


def test_the_exported_onnx_has_a_dynamic_batch_axis_and_matches_eager(exported, sample_data):
    model_dir, record = exported
    onnx_engine = engines.OnnxEngine.load(model_dir / "model.onnx", threads=1)
    eager = engines.EagerEngine.load(model_dir, threads=1)
    batch = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(onnx_engine.predict(batch), eager.predict(batch), atol=1e-4)


def test_the_record_drives_the_engine_choice(exported):
    model_dir, record = exported
    fastest = min(["eager", *record["engines"]], key=lambda n: (record["engines"].get(n) or record["eager"])["p50_ms"])
    assert engines.choose_engine("auto", record) == fastest
    cuda_here = engines.Runtimes(torch=True, onnxruntime=True, onnx_cuda=True)
    assert engines.choose_engine("auto", record, "cuda:0", cuda_here) == "eager"  # nothing timed on a GPU
    assert engines.load_engine(model_dir, record, "int8", threads=1).name == "int8"


def test_a_candidate_that_disagrees_with_eager_is_dropped_and_its_file_deleted(
    exported, sample_data, tmp_path, monkeypatch
):
    source_dir, _ = exported
    model_dir = _artifact(tmp_path / "other", seed=1)  # other weights than the graph handed to the export

    def other_models_graph(model, image_size, path):
        shutil.copy(source_dir / "model.onnx", path)
        return "test"

    monkeypatch.setattr(export, "export_onnx", other_models_graph)
    record = export.export_engines(model_dir, sample_data / "valid", candidates=["onnx"], **FAST)
    assert record["engines"] == {}
    assert "agreement" in record["rejected"]["onnx"]
    assert not (model_dir / "model.onnx").exists()


def test_verdict_thresholds():
    assert export.verdict(1.0, 0.9, 0.9) is None
    assert "agreement" in export.verdict(0.99, 0.9, 0.9)
    assert "accuracy" in export.verdict(0.996, 0.8, 0.9)


def test_unknown_candidates_are_a_user_error(exported):
    model_dir, _ = exported
    from imgclf.errors import UserError

    with pytest.raises(UserError, match="tensorrt"):
        export.export_engines(model_dir, model_dir, candidates=["tensorrt"])


def test_the_torchscript_exporter_takes_over_when_the_torch_export_one_fails(tmp_path, monkeypatch):
    import torch

    real_export = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("this architecture does not export")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    model = build_model("resnet18", 10).eval()
    assert export.export_onnx(model, 32, tmp_path / "model.onnx") == "torchscript"
    graph = engines.OnnxEngine.load(tmp_path / "model.onnx", threads=1)
    batch = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)  # a batch other than 1
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    np.testing.assert_allclose(graph.predict(batch), expected, atol=1e-4)
