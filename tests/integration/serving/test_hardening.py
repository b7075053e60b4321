"""Issue 12 on real MMS: no management API on a single-model endpoint's port, model URLs confined to the store
on multi-model endpoints, and a model that never loads ends the server after SAGEMAKER_STARTUP_TIMEOUT."""

from __future__ import annotations

import shutil
import time
import urllib.parse

import pytest
from support.served import http
from support.training import break_exported_engine_consistently, break_weights_consistently

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model

pytestmark = pytest.mark.integration


def test_single_model_endpoint_has_no_management_api_on_its_port(serve, trained_model):
    s = serve(trained_model, env={"IMGCLF_MANAGEMENT_PORT": "0"})
    s.wait_healthy()
    assert http("GET", s.url + "/ping")[0] == 200
    for method, path in (
        ("GET", "/models"),
        ("POST", "/models?url=http://127.0.0.1:1/x.mar"),
        ("PUT", "/models/model?min_worker=4"),
    ):
        status, _, body = http(method, s.url + path)
        assert status in (404, 405), (method, path, status, body)
    # and nothing is listening on a second port either (the gated front-end did not bind it)
    assert "MANAGEMENT_CONNECTOR" not in s.output() and "BOTH" not in s.output(), s.output()[-2000:]


def test_multi_model_endpoint_registers_only_directories_under_its_store(serve, trained_model, tmp_path):
    store = tmp_path / "models"
    shutil.copytree(trained_model, store / "digits" / "model")
    outside = tmp_path / "outside" / "model"
    shutil.copytree(trained_model, outside)
    (store / "link").symlink_to(outside.parent, target_is_directory=True)
    s = serve(store, "--multi-model")
    s.wait_healthy()

    def register(url: str, name: str) -> tuple[int, bytes]:
        query = urllib.parse.urlencode({"url": url, "model_name": name, "initial_workers": 1, "synchronous": "true"})
        status, _, body = http("POST", f"{s.url}/models?{query}")
        return status, body

    refused = {
        "http": "http://127.0.0.1:1/evil.mar",
        "https": "https://example.invalid/evil.mar",
        "s3": "s3://bucket/evil.tar.gz",
        "dotdot": f"{store}/../outside/model",
        "symlink-out": f"{store}/link/model",
        "missing": f"{store}/nothing-here",
    }
    for name, url in refused.items():
        status, body = register(url, name)
        assert status == 400 and b"under" in body, (name, status, body)
    # JSON bodies are checked the same way (SageMaker's own LoadModel sends {"model_name", "url"}).
    status, _, body = http(
        "POST", f"{s.url}/models", b'{"model_name": "j", "url": "http://127.0.0.1:1/x.mar"}',
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400, body
    # The server keeps answering, and a real model directory under the store still loads.
    status, body = register(str(store / "digits" / "model"), "digits")
    assert status == 200, body
    assert http("GET", s.url + "/ping")[0] == 200


def test_a_model_that_never_loads_ends_the_server_after_the_startup_timeout(serve, tmp_path, flavour):
    broken = tmp_path / "broken"
    save_artifact(build_model("resnet18", 2), ModelMeta.for_training("resnet18", 2, 32), ["a", "b"], broken)
    break_weights_consistently(broken)
    if flavour == "torch-free":
        break_exported_engine_consistently(broken)
    s = serve(broken, env={"SAGEMAKER_STARTUP_TIMEOUT": "15"})
    started = time.monotonic()
    while s.proc.poll() is None and time.monotonic() - started < 120:
        assert s.ping() is None, "/ping answered for a model that cannot load"
        time.sleep(0.5)
    assert s.proc.poll() is not None, "imgclf serve still running long after SAGEMAKER_STARTUP_TIMEOUT=15"
    assert s.proc.returncode != 0
    assert "SAGEMAKER_STARTUP_TIMEOUT" in s.output(), s.output()[-2000:]
    time.sleep(0.5)
    assert s.alive_pids() == []


def test_serve_refuses_a_tampered_model_naming_the_file(tmp_path, trained_model):
    """Issue 12: one flipped byte of model.pt and `imgclf serve` does not start (exit 2, the file named)."""
    import subprocess

    from support import VENV_BIN

    tampered = tmp_path / "model"
    shutil.copytree(trained_model, tampered)
    data = bytearray((tampered / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.pt").write_bytes(bytes(data))
    r = subprocess.run(
        [str(VENV_BIN / "imgclf"), "serve", "--model-dir", str(tampered), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "model.pt does not match the sha256" in r.stderr, r.stderr
