"""The same handler class under TorchServe (optional extra: torchserve==0.12.0 + torch-model-archiver)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest
from support import VENV_BIN
from support.ports import free_port
from support.served import http

import imgclf.serving.torchserve_handler as ts_handler

pytestmark = pytest.mark.integration


@pytest.fixture
def torchserve_bin():
    exe = VENV_BIN / "torchserve"
    if not exe.exists() or shutil.which("java") is None:
        pytest.skip("TorchServe extra not installed: pip install torchserve==0.12.0 torch-model-archiver==0.12.0")
    return exe


def test_same_handler_serves_under_torchserve_with_4xx_for_bad_input(
    torchserve_bin, trained_model, sample_data, tmp_path
):
    store = tmp_path / "store"
    store.mkdir()
    extra = ",".join(str(trained_model / f) for f in ("model.pt", "index_to_name.json", "imgclf.json"))
    subprocess.run(
        [
            str(VENV_BIN / "torch-model-archiver"),
            "--model-name",
            "digits",
            "--version",
            "1.0",
            "--handler",
            ts_handler.__file__,
            "--extra-files",
            extra,
            "--export-path",
            str(store),
            "--archive-format",
            "no-archive",
        ],
        check=True,
        timeout=120,
        capture_output=True,
        cwd=tmp_path,
    )
    port, mgmt, metrics = free_port(), free_port(), free_port()
    config = tmp_path / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{mgmt}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\ndefault_workers_per_model=1\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "TEMP": str(tmp_path)}
    log = open(tmp_path / "ts.log", "w")
    proc = subprocess.Popen(
        [
            str(torchserve_bin),
            "--start",
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            "--model-store",
            str(store),
            "--models",
            "digits=digits",
            "--ts-config",
            str(config),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if json.loads(http("GET", url + "/ping", timeout=2)[2]).get("status") == "Healthy":
                    # TorchServe's /ping is healthy before workers load; wait for a READY worker like a client must
                    described = json.loads(http("GET", f"http://127.0.0.1:{mgmt}/models/digits")[2])[0]
                    if any(w["status"] == "READY" for w in described["workers"]):
                        break
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "ts.log").read_text()[-3000:])
        png_path = sorted((sample_data / "test" / "7").glob("*.png"))[0]
        status, headers, body = http(
            "POST", url + "/predictions/digits", png_path.read_bytes(), {"Content-Type": "image/png"}
        )
        assert status == 200 and json.loads(body)["predictions"][0][0]["label"] == "7"
        status, _, body = http("POST", url + "/predictions/digits", b"junk", {"Content-Type": "image/png"})
        assert status == 400 and b"not an image" in body
        status, _, body = http(
            "POST", url + "/predictions/digits", png_path.read_bytes(), {"Content-Type": "image/png"}
        )
        assert status == 200
    finally:
        pids = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
