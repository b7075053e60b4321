"""A small, bounded HTTP load generator and server helpers for loopback benchmarks and reliability tests.

Closed loop: `concurrency` threads, each with its own keep-alive connection, send the next request as soon as
the previous one answers, until `duration_s` or `max_requests` is reached. Only 127.0.0.1 is allowed.
"""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# free_port: the tests' one copy (tests/support/ports.py), re-exported for the benchmarks and reliability tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.ports import free_port  # noqa: E402,F401

HOST = "127.0.0.1"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(latencies_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "max_ms": max(ms) if ms else float("nan"),
    }


class Client:
    """One keep-alive connection to 127.0.0.1:port; reconnects after a failure."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, body bytes); raises on connection errors (the caller counts them)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return resp.status, data
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # (start offset, latency, status)

    def as_dict(self) -> dict:
        ok = self.statuses.get(200, 0)
        return {
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "requests": sum(self.statuses.values()) + sum(self.errors.values()),
            "ok": ok,
            "throughput_rps": ok / self.seconds if self.seconds else 0.0,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            **summary_ms(self.latencies),
        }


def run_load(
    port: int,
    body: bytes,
    content_type: str = "image/jpeg",
    concurrency: int = 1,
    duration_s: float = 10.0,
    max_requests: int = 100_000,
    path: str = "/invocations",
    timeout: float = 60.0,
    on_tick=None,
) -> LoadResult:
    """Closed-loop load; `on_tick(elapsed_s)` is called about once a second from the caller's thread."""
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    lock = threading.Lock()
    sent = [0]
    stop = threading.Event()
    t0 = time.perf_counter()
    deadline = t0 + duration_s

    def worker() -> None:
        client = Client(port, timeout)
        try:
            while not stop.is_set() and time.perf_counter() < deadline:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                start = time.perf_counter()
                try:
                    status, _ = client.request("POST", path, body, {"Content-Type": content_type})
                except Exception as exc:  # connection refused/reset, timeout
                    with lock:
                        result.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                latency = time.perf_counter() - start
                with lock:
                    result.statuses[status] += 1
                    result.timeline.append((start - t0, latency, status))
                    if status == 200:
                        result.latencies.append(latency)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    while alive := [t for t in threads if t.is_alive()]:
        alive[0].join(timeout=1.0)
        if on_tick is not None:
            on_tick(time.perf_counter() - t0)
        if time.perf_counter() > deadline + timeout + 5:
            stop.set()
            break
    result.seconds = time.perf_counter() - t0
    return result


def sequential_latency(port: int, body: bytes, n: int, content_type: str = "image/jpeg", warmup: int = 5):
    """n sequential requests on one keep-alive connection (after `warmup`); returns (latencies_s, non-200s)."""
    client = Client(port)
    bad = 0
    latencies = []
    try:
        for i in range(warmup + n):
            start = time.perf_counter()
            status, _ = client.request("POST", "/invocations", body, {"Content-Type": content_type})
            elapsed = time.perf_counter() - start
            if status != 200:
                bad += 1
            elif i >= warmup:
                latencies.append(elapsed)
    finally:
        client.close()
    return latencies, bad


def ping(port: int, timeout: float = 2.0) -> int | None:
    """/ping status, or None when nothing answers."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        conn.request("GET", "/ping")
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def mms_running() -> list[int]:
    """PIDs of any multi-model-server front-end on this host (MMS refuses to start beside another)."""
    out = subprocess.run(["pgrep", "-f", "com.amazonaws.ml.mms"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_for_no_mms(timeout_s: float, log=print) -> None:
    deadline = time.monotonic() + timeout_s
    while pids := mms_running():
        if time.monotonic() > deadline:
            raise RuntimeError(f"another multi-model-server is running (pids {pids}); not starting ours")
        log(f"another MMS is running (pids {pids}); waiting")
        time.sleep(5)


def start_server(cmd: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    """Start a server in its own session (process group) so `stop_server` reaches every worker."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )


def stop_server(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL every descendant still alive, by pid.

    Descendants are listed first: `imgclf serve` runs java in a session of its own, so a group kill alone
    would miss it if the wrapper died first.
    """
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def process_tree_rss(pid: int) -> dict[str, list]:
    """RSS (MB) of a model server's processes: the java front-end, and the Python workers.

    MMS 1.1 starts one `model_service_worker.py` that forks one child per worker connection: the children
    are the workers (they hold the model); the forking parent is reported apart (`worker_parent_mb`).
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"frontend_mb": [], "workers_mb": [], "worker_pids": [], "worker_parent_mb": []}
    frontend, workers, worker_pids, parents = [], [], [], []
    for p in procs:
        try:
            cmdline = " ".join(p.cmdline())
            rss = round(p.memory_info().rss / 2**20, 1)
            parent_cmd = " ".join(p.parent().cmdline()) if p.parent() else ""
        except psutil.NoSuchProcess:
            continue
        if p.name() == "java" or "com.amazonaws.ml.mms" in cmdline:
            frontend.append(rss)
        elif "model_service_worker" in cmdline:
            if "model_service_worker" in parent_cmd:
                workers.append(rss)
                worker_pids.append(p.pid)
            else:
                parents.append(rss)
    return {"frontend_mb": frontend, "workers_mb": workers, "worker_pids": worker_pids, "worker_parent_mb": parents}
