"""`imgclf serve` under hostile input, sustained load and a killed worker (the real MMS server on loopback).

One server for the module (MMS refuses to start beside another MMS on the host: we wait for others to finish).
The artifact is a generated ResNet-18 at 64 px, so the fuzz and load phases stay within the tier's time.

Both serve flavours (support.served.FLAVOUR_ENV): eager with torch, and torch-free on the exported ONNX engine as
in the CPU image. The load and fuzz budgets are split between them, so the tier takes the time it took for one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import threading
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import VENV_BIN
from support.reliability import loadgen
from support.served import FLAVOUR_ENV
from support.training import export_onnx_on_noise

pytestmark = pytest.mark.reliability

# The whole tier's budgets, shared by the flavours.
LOAD_SECONDS = float(os.environ.get("IMGCLF_RELIABILITY_LOAD_S", "60")) / len(FLAVOUR_ENV)
FUZZ_EXAMPLES = int(os.environ.get("IMGCLF_RELIABILITY_FUZZ", "1000")) // len(FLAVOUR_ENV)


# ---- the server -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=tuple(FLAVOUR_ENV))
def flavour(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def artifact(flavour, tmp_path_factory):
    """The generated model; for the torch-free flavour with its ONNX engine exported and validated."""
    import torch

    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.model import build_model

    out = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(0)
    model = build_model("resnet18", 10, "none")
    save_artifact(model, ModelMeta.for_training("resnet18", 10, 64), [str(i) for i in range(10)], out)
    if flavour == "torch-free":
        export_onnx_on_noise(out)
    return out


@pytest.fixture(scope="module")
def server(artifact, flavour, tmp_path_factory):
    loadgen.wait_for_no_mms(300)
    port = loadgen.free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [str(VENV_BIN / "imgclf"), "serve", "--model-dir", str(artifact), "--port", str(port), "--host", "127.0.0.1"]
    proc = loadgen.start_server(cmd, str(log), env=FLAVOUR_ENV[flavour])
    try:
        deadline = time.monotonic() + 180
        while loadgen.ping(port) != 200:
            assert proc.poll() is None, f"imgclf serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no healthy /ping in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield {"port": port, "proc": proc, "log": log}
    finally:
        loadgen.stop_server(proc)


def _jpeg(size=(64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _png(size=(48, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 77).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a valid CRC and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _png_bomb() -> bytes:
    """20,000 x 20,000 greyscale zeros: ~400 MB decoded from a few hundred KB (Pillow's bomb limit is 179 Mpx)."""
    width = height = 20_000
    comp = zlib.compressobj(6)
    row = b"\x00" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


class Listener:
    """A loopback TCP listener that counts connection attempts (it must see none)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


CONTENT_TYPES = [
    "image/jpeg",
    "image/png",
    "application/x-image",
    "application/json",
    "application/x-npy",
    "text/csv",
    "text/plain",
    "application/octet-stream",
    "",
    "image/jpeg; charset=utf-8",
    "multipart/form-data; boundary=x",
    "image/\u00e9",
    "IMAGE/JPEG",
]


def _mutate(data: st.DataObject, blob: bytes) -> bytes:
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        pos = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            out = out[:pos]
        elif op == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
        elif op == "zero" and out:
            out[pos : pos + 16] = b"\x00" * len(out[pos : pos + 16])
    return bytes(out)


def _json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


# ---- tests ----------------------------------------------------------------------------------------------------


def test_hostile_payloads_get_no_5xx_no_worker_restart_and_no_outbound_connection(server):
    port = server["port"]
    listener = Listener()
    url = f"http://127.0.0.1:{listener.port}/model.jpg"
    jpeg, png = _jpeg(), _png()
    workers_before = sorted(loadgen.process_tree_rss(server["proc"].pid)["worker_pids"])
    assert workers_before, "no MMS Python worker found under the server process"
    seen: dict[int, int] = {}
    five_xx: list[tuple] = []
    dropped: list[str] = []
    client = loadgen.Client(port, timeout=30)

    def send(body: bytes, content_type: str | None, what: str) -> None:
        # Header bytes as given (UTF-8): http.client would refuse non-latin-1 text before sending.
        headers = {} if content_type is None else {"Content-Type": content_type.encode()}
        try:
            status, answer = client.request("POST", "/invocations", body, headers)
        except OSError as exc:
            dropped.append(f"{what}: {exc!r}")
            return
        seen[status] = seen.get(status, 0) + 1
        if status >= 500:
            five_xx.append((what, content_type, body[:64], answer[:300]))

    # Fixed cases first: absurd dimensions, a decompression bomb, oversize bodies, SSRF-style JSON.
    fixed = [
        (_png_header_only(100_000, 100_000), "image/png", "header claims 100000x100000"),
        (_png_header_only(0, 0), "image/png", "header claims 0x0"),
        (_png_header_only(1, 2**31 - 1), "image/png", "header claims 1x2^31"),
        (_png_bomb(), "image/png", "decompression bomb"),
        (b"\xff" * (7 * 2**20), "image/jpeg", "7 MB body over the 6 MB limit"),
        (json.dumps({"url": url}).encode(), "application/json", "json url"),
        (json.dumps({"url": url, "instances": [{"url": url}]}).encode(), "application/json", "nested url"),
        (json.dumps([url]).encode(), "application/json", "list of url"),
        (url.encode(), "text/plain", "bare url"),
        (url.encode(), "application/x-image", "url as image body"),
        (b"", "image/jpeg", "empty body"),
        (jpeg, None, "no content type"),
    ]
    for body, ctype, what in fixed:
        send(body, ctype, what)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def fuzz(data):
        kind = data.draw(st.sampled_from(["jpeg", "png", "bytes", "json", "url-json"]))
        if kind == "jpeg":
            body = _mutate(data, jpeg)
        elif kind == "png":
            body = _mutate(data, png)
        elif kind == "bytes":
            body = data.draw(st.binary(max_size=2048))
        elif kind == "json":
            body = json.dumps(data.draw(_json_values())).encode()
        else:
            body = json.dumps({"url": url, "extra": data.draw(_json_values())}).encode()
        ctype = data.draw(st.sampled_from(CONTENT_TYPES) | st.text(max_size=30).filter(str.isprintable))
        send(body, ctype, kind)

    try:
        fuzz()
    finally:
        client.close()
        listener.close()
    total = sum(seen.values()) + len(dropped)
    print(f"\nfuzz: {total} payloads, statuses {dict(sorted(seen.items()))}, dropped connections {len(dropped)}")
    assert total >= FUZZ_EXAMPLES
    assert not five_xx, f"{len(five_xx)} 5xx answers, first: {five_xx[:3]}"
    assert listener.accepted == 0, f"the server connected {listener.accepted} time(s) to a URL from a payload"
    workers_after = sorted(loadgen.process_tree_rss(server["proc"].pid)["worker_pids"])
    assert workers_after == workers_before, f"workers restarted: {workers_before} -> {workers_after}"
    # Only the over-limit body may be refused by closing the connection.
    assert all(d.startswith("7 MB body") for d in dropped), dropped
    assert loadgen.ping(port) == 200


def test_sustained_load_16_clients_zero_errors_and_flat_memory(server):
    port, pid = server["port"], server["proc"].pid
    body = _jpeg((224, 224))
    rss_at: dict[str, float] = {}

    def on_tick(elapsed: float) -> None:
        if elapsed >= 10 and "10s" not in rss_at:
            rss_at["10s"] = sum(loadgen.process_tree_rss(pid)["workers_mb"])

    result = loadgen.run_load(port, body, concurrency=16, duration_s=LOAD_SECONDS, timeout=60, on_tick=on_tick)
    rss_at["end"] = sum(loadgen.process_tree_rss(pid)["workers_mb"])
    d = result.as_dict()
    growth = (rss_at["end"] - rss_at["10s"]) / rss_at["10s"]
    print(
        f"\nload: {d['requests']} requests in {d['seconds']:.1f}s at 16 clients, {d['throughput_rps']:.1f} req/s, "
        f"p50 {d['p50_ms']:.0f} ms, p99 {d['p99_ms']:.0f} ms, statuses {d['statuses']}, errors {d['errors']}, "
        f"worker RSS {rss_at['10s']:.0f} MB at 10 s -> {rss_at['end']:.0f} MB at end ({growth:+.1%})"
    )
    assert d["ok"] == d["requests"] and not d["errors"], d
    assert growth < 0.05


def test_sigkill_of_a_worker_under_load_recovers_within_10s(server):
    port, pid = server["port"], server["proc"].pid
    body = _jpeg()
    victims = loadgen.process_tree_rss(pid)["worker_pids"]
    assert victims
    pings: list[tuple[float, int | None, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def watch_ping() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            status = loadgen.ping(port, timeout=2)
            pings.append((start - t0, status, time.perf_counter() - start))
            time.sleep(0.2)

    killed_at: list[float] = []

    def killer() -> None:
        time.sleep(3)
        killed_at.append(time.perf_counter() - t0)
        os.kill(victims[0], signal.SIGKILL)

    watcher = threading.Thread(target=watch_ping, daemon=True)
    watcher.start()
    threading.Thread(target=killer, daemon=True).start()
    result = loadgen.run_load(port, body, concurrency=4, duration_s=20, timeout=30)
    stop.set()
    watcher.join(timeout=5)

    kill_t = killed_at[0]
    failures = [(t, s) for t, _, s in result.timeline if s != 200]
    last_failure = max((t for t, s in failures), default=kill_t)
    recovery = max(0.0, last_failure - kill_t)
    after = [s for t, _, s in result.timeline if t > kill_t + 10]
    slowest = max(lat for _, lat, _ in result.timeline)
    print(
        f"\nworker kill: {len(failures)} non-200 answers {failures}, last {recovery:.1f}s after the kill, "
        f"connection errors {dict(result.errors)}, slowest answer {slowest:.1f}s, "
        f"pings {[(round(t, 1), s) for t, s, _ in pings if t > kill_t - 1][:40]}"
    )
    assert recovery <= 10, f"still failing {recovery:.1f}s after the kill"
    assert after and all(s == 200 for s in after)
    assert slowest < 30, "a request hung"
    assert all(s in (200, 503) for _, s, _ in pings), "ping answered something other than 200/503 or not at all"
    assert all(lat < 2 for _, _, lat in pings), "a /ping took over 2 s"
    assert loadgen.ping(port) == 200
    deadline = time.monotonic() + 30
    while len(loadgen.process_tree_rss(pid)["worker_pids"]) < len(victims) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(loadgen.process_tree_rss(pid)["worker_pids"]) == len(victims), "the killed worker was not replaced"
