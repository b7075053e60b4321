"""`imgclf serve` as a managed process (start, wait for /ping, SIGTERM, leftovers), and HTTP without exceptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from support import REPO, VENV_BIN
from support.ports import free_port

# The serve flavours, as environments of `imgclf serve` on the host: "torch" serves model.pt eagerly (the image
# with torch on a GPU); "torch-free" makes torch unimportable in the server and its MMS workers
# (support/torch_free/sitecustomize.py), as in the CPU image, and serves the exported engine auto chooses.
FLAVOUR_ENV = {
    "torch": {"IMGCLF_ENGINE": "eager"},
    "torch-free": {"PYTHONPATH": str(REPO / "tests" / "support" / "torch_free"), "IMGCLF_ENGINE": "auto"},
}


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, body) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Served:
    """One `imgclf serve` process: start, wait for the first 200 /ping (timed), SIGTERM, leftover check."""

    def __init__(self, model_dir: Path, log_path: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The management API is off by default (single model); tests read worker state through a loopback one.
        self.management_url = f"http://127.0.0.1:{free_port()}"
        self.log_path = log_path
        self.cmd = [str(VENV_BIN / "imgclf"), "serve", "--model-dir", str(model_dir), "--port", str(self.port)]
        self.cmd += ["--host", "127.0.0.1", *args]
        management_port = self.management_url.rsplit(":", 1)[1]
        self.env = {
            **os.environ,
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "IMGCLF_MANAGEMENT_PORT": management_port,
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()
        self.ping_answers_before_ready: list[int] = []

    def start(self) -> Served:
        self.log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def ping(self) -> int | None:
        try:
            return http("GET", self.url + "/ping", timeout=2)[0]
        except (urllib.error.URLError, OSError):
            return None  # nothing listening yet

    def wait_healthy(self, timeout: float = 180) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"imgclf serve exited {self.proc.returncode}:\n{self.output()[-3000:]}"
            status = self.ping()
            self.remember_pids()
            if status == 200:
                self.healthy_after = time.monotonic() - self.started
                return self.healthy_after
            if status is not None:
                self.ping_answers_before_ready.append(status)
            time.sleep(0.05)
        raise AssertionError(f"/ping not 200 after {timeout} s:\n{self.output()[-3000:]}")

    def remember_pids(self) -> None:
        try:
            self.seen_pids |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.Error:
            pass

    def workers(self) -> list[psutil.Process]:
        self.remember_pids()
        return [
            psutil.Process(pid)
            for pid in self.seen_pids
            if psutil.pid_exists(pid) and "model_service_worker" in " ".join(psutil.Process(pid).cmdline())
        ]

    def alive_pids(self) -> list[int]:
        alive = []
        for pid in self.seen_pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                pass
        return alive

    def invoke(self, body: bytes, content_type: str = "image/png", accept: str | None = None, **headers):
        h = {"Content-Type": content_type, **headers}
        if accept:
            h["Accept"] = accept
        return http("POST", self.url + "/invocations", body, h)

    def terminate(self, timeout: float = 20) -> float:
        self.remember_pids()
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        """Test teardown: whatever a failed test left behind is killed, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.remember_pids()
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in self.alive_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def worker_start_time(server: Served) -> str:
    status, _, body = http("GET", server.management_url + "/models/model")
    assert status == 200, body
    described = json.loads(body)
    described = described[0] if isinstance(described, list) else described
    return json.dumps([(w["id"], w["startTime"]) for w in described["workers"]])
