"""Container fuzz of the request budget (issue 12): every hostile class of tests/hostile_payloads.py, plus chunked
bodies and slow-loris clients, against `docker run --memory 3g IMAGE serve` with a 224-px model, for both serve
flavours (the image with torch, serving eager; the torch-free CPU image, serving the exported ONNX).

Asserted: every answer is 4xx, or 200 for the valid classes; no worker restarts (the MMS worker PIDs are the same
at the end, the log has no "Worker died"); each request's peak worker RSS growth (VmHWM, reset before every
request through /proc/PID/clear_refs inside the container) stays under 1 GiB. Prints the table by class and
status and writes it as JSON under the test's tmp dir (and to $IMGCLF_FUZZ_REPORT when set).

The image: $IMGCLF_FUZZ_SERVE_IMAGE when set (built by the caller), else the container tier's images, built from
the working tree when stale (tests/support/containers.py). Runs in about two minutes once the image
exists.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import support.containers as sm
import support.hostile_payloads as hp
from support.training import export_onnx_on_noise

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model

pytestmark = [pytest.mark.fuzz, pytest.mark.container]

MEMORY = "3g"
RSS_BUDGET = 1 << 30  # peak worker RSS growth allowed per request
PER_CLASS = 3
MB = 1 << 20

# Inside the container: one JSON line per input line, {pid: [VmRSS kB, VmHWM kB]} of every MMS Python worker;
# "reset" also resets each worker's VmHWM to its current RSS after reading it.
MONITOR = r"""
import json, os, sys
def workers():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if b"model_service_worker" not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        kv = {l.split(":")[0]: int(l.split()[1]) for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))}
        out[pid] = [kv.get("VmRSS", 0), kv.get("VmHWM", 0)]
    return out
for line in sys.stdin:
    w = workers()
    print(json.dumps(w), flush=True)
    if line.strip() == "reset":
        for pid in w:
            try:
                open(f"/proc/{pid}/clear_refs", "w").write("5")
            except OSError:
                pass
"""


class Monitor:
    def __init__(self, name: str):
        self.proc = subprocess.Popen(
            [sm.DOCKER, "exec", "-i", name, "/opt/venv/bin/python", "-u", "-c", MONITOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, what: str) -> dict[str, list[int]]:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module", params=("torch", "cpu"))
def flavour(request) -> str:
    """The serve flavour fuzzed: the image with torch (eager) and the torch-free CPU image (the exported ONNX)."""
    return request.param


@pytest.fixture(scope="module")
def serve_image(flavour) -> str:
    problem = sm.docker_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    if flavour == "cpu":
        sm.ensure_cpu_image()
        return sm.SERVE_CPU_IMAGE
    image = os.environ.get("IMGCLF_FUZZ_SERVE_IMAGE")
    if image:
        if sm.image_created(image) is None:
            pytest.fail(f"IMGCLF_FUZZ_SERVE_IMAGE={image} does not exist", pytrace=False)
        return image
    sm.ensure_images()
    return sm.SERVE_IMAGE


@pytest.fixture(scope="module")
def model_224(flavour, tmp_path_factory) -> Path:
    """A 224-px ResNet-18 (random weights); for the CPU image with its ONNX engine exported and validated."""
    out = tmp_path_factory.mktemp("fuzz-model")
    save_artifact(build_model("resnet18", 10), ModelMeta.for_training("resnet18", 10, 224), list("abcdefghij"), out)
    if flavour == "cpu":
        export_onnx_on_noise(out)
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


@pytest.fixture(scope="module")
def capped_server(serve_image, model_224):
    name = sm.container_name("fuzz")
    port = sm.free_port()
    cmd = [sm.DOCKER, "run", "-d", "--name", name, *sm.LABELS, "--memory", MEMORY]
    cmd += ["--memory-swap", MEMORY, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_224}:/opt/ml/model:ro"]
    subprocess.run([*cmd, serve_image, "serve"], check=True, capture_output=True, text=True, timeout=60)
    try:
        url = f"http://127.0.0.1:{port}"
        sm.wait_for_ping(url, name, 300)
        yield sm.Server(name=name, url=url, started_s=0.0), port
    finally:
        sm.docker("rm", "-f", name, check=False)


def _invoke(port: int, body, content_type: str, chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if chunked:
            conn.request("POST", "/invocations", body=iter(body), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/invocations", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _slow_loris(port: int, seconds: float, body_too: bool) -> str:
    """Headers (and, with body_too, a body) dribbled a few bytes at a time, then the client gives up."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 30)
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n"
    deadline = time.monotonic() + seconds
    try:
        if body_too:
            sock.sendall(head + b"\r\n")
            while time.monotonic() < deadline:
                sock.sendall(b"\x89PNG" * 4)
                time.sleep(0.2)
        else:
            for byte in head:
                if time.monotonic() > deadline:
                    break
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        return "abandoned"
    except OSError as exc:
        return f"closed by server ({type(exc).__name__})"
    finally:
        sock.close()


def test_hostile_requests_under_a_3g_cap_get_4xx_no_restart_bounded_rss(capped_server, serve_image, tmp_path):
    server, port = capped_server
    valid = hp.VALID | {"chunked_valid_image", "during_slow_loris"}
    refused = hp.REFUSED | {"chunked_wide_short_png", "chunked_deep_json"}
    monitor = Monitor(server.name)
    first = monitor.ask("read")
    assert first, "no MMS worker process found in the container"
    rng = random.Random(12)
    counts: dict[str, Counter] = defaultdict(Counter)
    peak: dict[str, int] = defaultdict(int)
    problems = []
    started = time.monotonic()

    def send(name: str, body, ct: str, chunked: bool = False) -> None:
        before = monitor.ask("reset")
        try:
            status, payload = _invoke(port, body, ct, chunked)
        except (OSError, http.client.HTTPException) as exc:
            status, payload = f"error {type(exc).__name__}", b""
        after = monitor.ask("read")
        growth = max((after[p][1] - before[p][0]) * 1024 for p in after if p in before) if after else 0
        peak[name] = max(peak[name], growth)
        counts[name][status] += 1
        ok = status == 200 if name in valid else isinstance(status, int) and (400 <= status < 500 or status == 200)
        if name in refused and status == 200:
            ok = False
        if not ok:
            problems.append((name, ct, status, payload[:300]))
        if growth > RSS_BUDGET:
            problems.append((name, ct, f"worker RSS grew {growth / MB:.0f} MB"))
        if set(after) != set(first):
            problems.append((name, ct, f"worker PIDs changed: {sorted(first)} -> {sorted(after)}"))

    for name, generate in hp.CLASSES.items():
        for _ in range(PER_CLASS):
            body, ct = generate(random.Random(rng.getrandbits(32)))
            send(name, body, ct)
    # Chunked transfer encoding: a valid image, a hostile one and a deep JSON, in 1 KB chunks.
    for name, (body, ct) in {
        "chunked_valid_image": (hp.image("JPEG", (320, 240)), "image/jpeg"),
        "chunked_wide_short_png": (hp.wide_short_png(), "image/png"),
        "chunked_deep_json": (hp.deep_json(100_000), "application/json"),
    }.items():
        send(name, [body[i : i + 1024] for i in range(0, len(body), 1024)], ct, chunked=True)
    # Slow-loris: 8 clients dribbling headers or bodies for 8 s while a normal client is answered promptly.
    loris_results: list[str] = []
    threads = [
        threading.Thread(target=lambda b=(i % 2 == 0): loris_results.append(_slow_loris(port, 8, b))) for i in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(1)
    for _ in range(3):
        t0 = time.monotonic()
        send("during_slow_loris", hp.image("PNG", (64, 64)), "image/png")
        if time.monotonic() - t0 > 5:
            problems.append(("during_slow_loris", f"answered in {time.monotonic() - t0:.1f} s"))
    for t in threads:
        t.join(timeout=60)
    counts["slow_loris_clients"].update(loris_results)
    assert server.ping() == 200
    last = monitor.ask("read")
    monitor.close()
    logs = server.logs()
    cgroup_peak = sm.docker(
        "exec",
        server.name,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes",
        check=False,
    ).stdout.strip()
    restarts = len(set(first) ^ set(last)) // 2 + logs.count("Worker died") + logs.count("Worker disconnected")
    report = {
        "image": serve_image,
        "memory_cap": MEMORY,
        "workers": sorted(first),
        "worker_restarts": restarts,
        "container_peak_mb": round(int(cgroup_peak) / MB) if cgroup_peak.isdigit() else cgroup_peak,
        "seconds": round(time.monotonic() - started),
        "classes": {
            name: {"statuses": {str(k): v for k, v in c.items()}, "peak_worker_rss_growth_mb": round(peak[name] / MB)}
            for name, c in counts.items()
        },
    }
    text = json.dumps(report, indent=2)
    (tmp_path / "fuzz_container.json").write_text(text)
    if os.environ.get("IMGCLF_FUZZ_REPORT"):
        Path(os.environ["IMGCLF_FUZZ_REPORT"]).write_text(text)
    print(f"\ncontainer fuzz (--memory {MEMORY}): class, statuses, peak worker RSS growth per request")
    for name, row in report["classes"].items():
        print(f"  {name:28s} {row['statuses']}  {row['peak_worker_rss_growth_mb']} MB")
    print(f"  worker restarts: {restarts}; container peak memory: {report['container_peak_mb']} MB")
    assert restarts == 0, logs[-3000:]
    assert not problems, problems
