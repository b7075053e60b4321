"""The worker-count rule and the knobs' parsing."""

from __future__ import annotations

import json

import pytest

from imgclf.serving import engines, environment
from imgclf.serving.environment import HandlerSettings, ServerSettings, default_workers
from imgclf.serving.limits import RequestLimits

pytestmark = pytest.mark.unit


def test_cpu_workers_are_one_per_cpu_when_memory_allows():
    assert default_workers(None, cpus=4, mem_mb=64_000, gpus=0) == 4


def test_cpu_workers_are_capped_by_memory_not_blindly_one_per_cpu(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\0" * (300 << 20))  # 300 MB weights -> 700 + 2 x 300 = 1.3 GB per worker
    assert default_workers(tmp_path, cpus=96, mem_mb=8_000, gpus=0, runtimes=WITH_TORCH) == 5
    assert default_workers(tmp_path, cpus=96, mem_mb=1_500, gpus=0, runtimes=WITH_TORCH) == 1


WITH_TORCH = engines.Runtimes(torch=True, onnxruntime=True)
TORCH_FREE = engines.Runtimes(torch=False, onnxruntime=True)  # the CPU image (Dockerfile.serve-cpu)


def _exported(model_dir, onnx_p50: float, eager_p50: float = 50.0):
    """model.pt (45 MB) and a validated model.onnx (44 MB) recorded in imgclf.json, as the export leaves them."""
    (model_dir / "model.pt").write_bytes(b"\0" * (45 << 20))
    (model_dir / "model.onnx").write_bytes(b"\0" * (44 << 20))
    record = {"eager": {"p50_ms": eager_p50}, "engines": {"onnx": {"file": "model.onnx", "p50_ms": onnx_p50}}}
    (model_dir / "imgclf.json").write_text(json.dumps({"export": record}))
    return model_dir


def test_a_torch_free_worker_is_estimated_without_torch(tmp_path):
    model_dir = _exported(tmp_path, onnx_p50=80.0)  # eager is faster: with torch, the workers run eager
    onnx_worker = environment.ONNX_WORKER_BASE_MB + environment.ONNX_WORKER_WEIGHT_COPIES * 44
    torch_worker = environment.WORKER_BASE_MB + environment.WORKER_WEIGHT_COPIES * 45
    assert environment.worker_memory_mb(model_dir, runtimes=TORCH_FREE) == onnx_worker
    assert environment.worker_memory_mb(model_dir, runtimes=WITH_TORCH) == torch_worker
    assert onnx_worker < torch_worker / 2
    # the same host runs many more torch-free workers
    assert default_workers(model_dir, cpus=96, mem_mb=8_000, gpus=0, runtimes=TORCH_FREE) == 6976 // onnx_worker
    assert default_workers(model_dir, cpus=96, mem_mb=8_000, gpus=0, runtimes=WITH_TORCH) == 6976 // torch_worker


def test_the_estimate_follows_the_engine_the_workers_will_run(tmp_path):
    model_dir = _exported(tmp_path, onnx_p50=20.0)  # onnx is faster: auto runs it, and never imports torch
    onnx_worker = environment.worker_memory_mb(model_dir, runtimes=WITH_TORCH)
    assert onnx_worker == environment.worker_estimate_mb(44, torch=False)
    assert environment.worker_memory_mb(model_dir, engine="eager", runtimes=WITH_TORCH) > onnx_worker
    assert environment.worker_memory_mb(model_dir, 2048, runtimes=TORCH_FREE) == 2048  # the override wins


def test_imgclf_serve_sizes_the_workers_for_imgclf_engine(monkeypatch, tmp_path):
    model_dir = _exported(tmp_path, onnx_p50=20.0)
    monkeypatch.setattr(environment, "memory_mb", lambda: 4_000)
    monkeypatch.setattr(environment, "cpu_count", lambda: 64)
    monkeypatch.setattr(environment, "gpu_count", lambda: 0)
    per_worker = {e: environment.worker_memory_mb(model_dir, engine=e) for e in ("eager", "auto")}
    for engine, expected in per_worker.items():
        monkeypatch.setenv("IMGCLF_ENGINE", engine)
        assert ServerSettings.from_env(model_dir).workers == (4_000 - 1024) // expected


def test_gpu_hosts_get_one_worker_per_device():
    assert default_workers(None, cpus=32, mem_mb=200_000, gpus=4) == 4


def test_sagemaker_model_server_workers_overrides_the_rule(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    s = ServerSettings.from_env(None)
    assert s.workers == 3 and s.workers_from_env


def test_port_timeouts_and_payload_from_the_sagemaker_knobs(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "2")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "30")
    s = ServerSettings.from_env(None)
    assert (s.port, s.max_payload_mb, s.timeout_s) == (9090, 2, 30)
    assert ServerSettings.from_env(None, port=1234).port == 1234


def test_bad_knob_values_fail_with_the_variable_name(monkeypatch):
    monkeypatch.setenv("IMGCLF_TOP_K", "many")
    with pytest.raises(ValueError, match="IMGCLF_TOP_K"):
        HandlerSettings.from_env()


def test_torch_threads_share_the_cpus_between_workers():
    assert environment.torch_threads(2, cpus=8) == 4
    assert environment.torch_threads(16, cpus=8) == 1


def test_gpu_count_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert environment.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert environment.gpu_count() == 0


def test_flags_override_the_environment_without_writing_it(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGCLF_BATCH_SIZE", "2")
    before = dict(__import__("os").environ)
    s = ServerSettings.from_env(tmp_path, workers=3, batch_size=8, max_batch_delay_ms=5, multi_model=True)
    assert (s.workers, s.batch_size, s.max_batch_delay_ms, s.multi_model) == (3, 8, 5, True)
    assert s.workers_from_env and s.handler.workers == 3 and s.model_dir == str(tmp_path)
    assert dict(__import__("os").environ) == before


def test_a_bad_flag_fails_with_the_flag_name():
    with pytest.raises(ValueError, match="--batch-size 0"):
        ServerSettings.from_env(None, batch_size=0, environ={})


def test_model_dir_defaults_under_sagemaker_base_dir():
    environ = {"SAGEMAKER_BASE_DIR": "/srv/ml"}
    assert ServerSettings.from_env(environ=environ, workers=1).model_dir == "/srv/ml/model"
    mme = {**environ, "SAGEMAKER_MULTI_MODEL": "true"}
    assert ServerSettings.from_env(environ=mme, workers=1).model_dir == "/srv/ml/models"


def test_handler_settings_survive_the_trip_through_the_worker_environment():
    limits = RequestLimits(max_image_pixels=1000, npy_dtypes=("uint8",))
    settings = HandlerSettings(default_accept="text/csv", top_k=3, limits=limits, workers=4)
    assert HandlerSettings.from_env(settings.to_env()) == settings
    assert HandlerSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}).workers == 2  # TorchServe
    assert HandlerSettings.from_env({}) == HandlerSettings()


def test_the_jar_is_package_data_unless_imgclf_mms_jar_names_another(tmp_path):
    assert environment.find_mms_jar({}) == environment.PACKAGED_MMS_JAR
    assert environment.PACKAGED_MMS_JAR.parent == environment.Path(environment.__file__).resolve().parent
    other = tmp_path / "other.jar"
    other.write_bytes(b"PK")
    assert environment.find_mms_jar({"IMGCLF_MMS_JAR": str(other)}) == other
    assert ServerSettings.from_env(environ={"IMGCLF_MMS_JAR": str(other)}, workers=1).mms_jar == other


@pytest.mark.parametrize(("raw", "engine"), [(None, "auto"), ("", "auto"), ("ONNX", "onnx"), (" int8 ", "int8")])
def test_imgclf_engine_is_read_normalised_and_passed_to_the_workers(raw, engine):
    settings = HandlerSettings.from_env({} if raw is None else {"IMGCLF_ENGINE": raw})
    assert settings.engine == engine
    assert HandlerSettings.from_env(settings.to_env()).engine == engine


def test_an_unknown_imgclf_engine_fails_imgclf_serve_naming_the_choices():
    with pytest.raises(ValueError, match="IMGCLF_ENGINE='tensorrt' must be one of auto, eager, fp16, onnx, int8"):
        ServerSettings.from_env("/tmp/model", environ={"IMGCLF_ENGINE": "tensorrt"})


@pytest.mark.parametrize(("raw", "draft"), [(None, False), ("", False), ("on", True), (" ON ", True), ("off", False)])
def test_imgclf_jpeg_draft_is_off_by_default_and_reaches_the_workers(raw, draft):
    settings = HandlerSettings.from_env({} if raw is None else {"IMGCLF_JPEG_DRAFT": raw})
    assert settings.jpeg_draft is draft
    assert HandlerSettings.from_env(settings.to_env()).jpeg_draft is draft


def test_a_misspelt_imgclf_jpeg_draft_fails_imgclf_serve():
    with pytest.raises(ValueError, match="IMGCLF_JPEG_DRAFT='yes please' must be on or off"):
        ServerSettings.from_env("/tmp/model", environ={"IMGCLF_JPEG_DRAFT": "yes please"})
