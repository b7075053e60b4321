"""The worker-count rule and the knobs' parsing."""

from __future__ import annotations

import pytest

from imgclf.serving import environment
from imgclf.serving.environment import ServerSettings, ServingSettings, default_workers

pytestmark = pytest.mark.unit


def test_cpu_workers_are_one_per_cpu_when_memory_allows():
    assert default_workers(None, cpus=4, mem_mb=64_000, gpus=0) == 4


def test_cpu_workers_are_capped_by_memory_not_blindly_one_per_cpu(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\0" * (300 << 20))  # 300 MB weights -> 1.5 GB per worker
    assert default_workers(tmp_path, cpus=96, mem_mb=8_000, gpus=0) == 4
    assert default_workers(tmp_path, cpus=96, mem_mb=1_500, gpus=0) == 1


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
        ServingSettings.from_env()


def test_torch_threads_share_the_cpus_between_workers():
    assert environment.torch_threads(2, cpus=8) == 4
    assert environment.torch_threads(16, cpus=8) == 1


def test_gpu_count_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert environment.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert environment.gpu_count() == 0
