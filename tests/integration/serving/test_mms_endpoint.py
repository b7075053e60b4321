"""A real MMS endpoint (`imgclf serve`, 1 worker) with a model trained on the digits: the SageMaker contract."""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import VENV_BIN
from support.served import http, worker_start_time

from imgclf.artifact import load_artifact
from imgclf.images import eval_transform, open_rgb

pytestmark = pytest.mark.integration


def sample_images(sample_data: Path, per_class: int = 2) -> list[tuple[Path, str]]:
    out = []
    for cls in sorted(p.name for p in (sample_data / "test").iterdir()):
        out += [(p, cls) for p in sorted((sample_data / "test" / cls).glob("*.png"))[:per_class]]
    return out


@pytest.fixture(scope="module")
def reference(trained_model):
    """The same artifact in-process: what the endpoint must answer."""
    art = load_artifact(trained_model)
    tf = eval_transform(art.meta)

    def top1(path: Path) -> str:
        with torch.no_grad():
            return art.index_to_name[int(art.model(tf(open_rgb(str(path)))[None]).argmax())]

    return top1


def jpeg_of(path: Path) -> bytes:
    buf = io.BytesIO()
    open_rgb(str(path)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def top1(body: bytes) -> list[str]:
    return [p[0]["label"] for p in json.loads(body)["predictions"]]


def test_port_opens_only_once_a_worker_has_loaded_the_model_then_first_request_answers(server, sample_data):
    # Nothing answered /ping before it was 200 (connection refused while loading), never a premature 200.
    assert server.ping_answers_before_ready == []
    out = server.output()
    assert out.index("loaded by a worker") < out.index("API bound to")
    path, label = sample_images(sample_data, 1)[0]
    started = time.monotonic()
    status, _, body = server.invoke(path.read_bytes())
    print(
        f"\nstart -> first 200 /ping: {server.healthy_after:.2f} s; first request after it: "
        f"{time.monotonic() - started:.2f} s"
    )
    assert status == 200


def test_top1_on_real_sample_images_matches_labels_and_the_in_process_model(server, sample_data, reference):
    images = sample_images(sample_data)
    served = [top1(server.invoke(p.read_bytes())[2])[0] for p, _ in images]
    assert served == [reference(p) for p, _ in images]
    accuracy = np.mean([s == label for s, (_, label) in zip(served, images, strict=True)])
    assert accuracy >= 0.8, accuracy


def test_every_input_type_gives_the_same_answer(server, sample_data):
    path, _ = sample_images(sample_data, 1)[3]
    png = path.read_bytes()
    b64 = base64.b64encode(png).decode()
    expected = top1(server.invoke(png)[2])[0]
    arr = np.asarray(Image.open(path))
    npy = io.BytesIO()
    np.save(npy, arr)
    cases = {
        "image/png": (png, "image/png"),
        "image/jpeg": (jpeg_of(path), "image/jpeg"),
        "application/x-image": (png, "application/x-image"),
        "application/octet-stream": (png, "application/octet-stream"),
        "json image": (json.dumps({"image": b64}).encode(), "application/json"),
        "json instances": (json.dumps({"instances": [b64, {"image": b64}]}).encode(), "application/json"),
        "jsonlines": ((json.dumps({"image": b64}) + "\n" + json.dumps(b64)).encode(), "application/jsonlines"),
        "npy uint8": (npy.getvalue(), "application/x-npy"),
    }
    for name, (body, ct) in cases.items():
        status, headers, answer = server.invoke(body, ct)
        assert status == 200, (name, answer)
        labels = top1(answer)
        assert labels and set(labels) == {expected}, (name, labels, expected)


def test_every_output_type(server, sample_data):
    png = sample_images(sample_data, 1)[0][0].read_bytes()
    status, headers, body = server.invoke(png)
    assert status == 200 and headers["content-type"] == "application/json"
    assert len(json.loads(body)["predictions"][0]) == 5
    assert len(json.loads(server.invoke(png, accept="application/json; top_k=2")[2])["predictions"][0]) == 2
    status, _, body = server.invoke(
        png, accept="application/json", **{"X-Amzn-SageMaker-Custom-Attributes": "output=probabilities"}
    )
    rows = json.loads(body)
    assert status == 200 and len(rows) == 1 and len(rows[0]) == 10 and abs(sum(rows[0]) - 1) < 1e-4
    status, headers, body = server.invoke(png, accept="application/x-npy")
    assert status == 200 and headers["content-type"] == "application/x-npy"
    assert np.load(io.BytesIO(body)).shape == (1, 10)
    status, _, body = server.invoke(png, accept="application/jsonlines")
    assert status == 200 and len(body.decode().splitlines()) == 1
    status, _, body = server.invoke(png, accept="text/csv")
    assert status == 406 and b"text/csv" in body


def bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + 2500)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(20_000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def post_expect_continue(port: int, length: int) -> int:
    """POST /invocations announcing `length` bytes with Expect: 100-continue, as large-upload clients do."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_every_bad_input_gets_4xx_with_a_message_and_the_same_worker_answers_next(server, sample_data):
    png_path, _ = sample_images(sample_data, 1)[0]
    png = png_path.read_bytes()
    expected = top1(server.invoke(png)[2])
    worker = worker_start_time(server)
    multi = io.BytesIO()
    frames = [open_rgb(str(png_path)), Image.new("RGB", (8, 8))]
    frames[0].save(multi, "GIF", save_all=True, append_images=frames[1:])
    cmyk = io.BytesIO()
    open_rgb(str(png_path)).convert("CMYK").save(cmyk, "JPEG")
    sixteen = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(png_path)).astype(np.uint16) * 257).save(sixteen, "PNG")
    refused = [
        (b"", "image/jpeg", 400, "Empty"),
        (png[: len(png) // 2], "image/png", 400, "truncated"),
        (b"this is text, not a picture", "image/jpeg", 400, "not an image"),
        (bomb_png(), "image/png", 413, "400,000,000 pixels"),
        (png, "text/csv", 415, "text/csv"),
        (b'{"image": "abc', "application/json", 400, "Malformed JSON"),
        (b'{"image": "@@@"}', "application/json", 400, "base64"),
        (b'{"url": "http://169.254.169.254/"}', "application/json", 400, "never fetches URLs"),
    ]
    for body, ct, status, needle in refused:
        started = time.monotonic()
        got, _, message = server.invoke(body, ct)
        assert got == status, (ct, needle, got, message[:300])
        assert needle.encode() in message, (needle, message[:300])
        assert time.monotonic() - started < 10
        assert top1(server.invoke(png)[2]) == expected, f"next request after {needle!r}"
    # Over SAGEMAKER_MAX_PAYLOAD_IN_MB (6): the front-end answers 413 (empty body) as soon as it sees the length.
    assert post_expect_continue(server.port, 7 * 1024 * 1024) == 413
    assert top1(server.invoke(png)[2]) == expected
    # converted, not refused: greyscale (the sample itself), multi-frame (first frame), CMYK, 16-bit
    for body, ct in (
        (multi.getvalue(), "image/gif"),
        (cmyk.getvalue(), "image/jpeg"),
        (sixteen.getvalue(), "image/png"),
    ):
        got, _, answer = server.invoke(body, ct)
        assert got == 200, (ct, answer[:300])
    assert worker_start_time(server) == worker, "the worker was restarted"


def test_batch_transform_split_line_and_execution_parameters(server, sample_data):
    images = sample_images(sample_data, 1)[:4]
    lines = "".join(json.dumps({"image": base64.b64encode(p.read_bytes()).decode()}) + "\n" for p, _ in images)
    status, headers, body = server.invoke(lines.encode(), "application/jsonlines", accept="application/jsonlines")
    assert status == 200 and headers["content-type"] == "application/jsonlines"
    out = [json.loads(line) for line in body.decode().splitlines()]
    assert len(out) == 4 and all(len(o) == 5 for o in out)
    status, _, body = http("GET", server.url + "/execution-parameters")
    assert status == 200
    assert json.loads(body) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_predict_cli_against_the_local_url(server, sample_data):
    (path, label), *_ = sample_images(sample_data, 1)
    out = subprocess.run(
        [str(VENV_BIN / "imgclf"), "predict", str(path), "--endpoint-url", server.url, "--json", "--top-k", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["image"] == str(path) and len(result["predictions"]) == 3
    table = subprocess.run(
        [str(VENV_BIN / "imgclf"), "predict", str(path), "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0 and "PROBABILITY" in table.stdout


class SageMakerRuntimeStandIn(BaseHTTPRequestHandler):
    """What SageMaker's runtime does with InvokeEndpoint: POST /endpoints/<name>/invocations -> container."""

    target = ""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        if "X-Amzn-SageMaker-Custom-Attributes" in self.headers:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = self.headers["X-Amzn-SageMaker-Custom-Attributes"]
        status, out_headers, answer = http("POST", self.target + "/invocations", body, headers)
        if status != 200:  # the runtime wraps container errors as ModelError
            answer = json.dumps(
                {
                    "ErrorCode": "ModelError",
                    "Message": "Received client error",
                    "OriginalStatusCode": status,
                    "OriginalMessage": answer.decode(errors="replace"),
                }
            ).encode()
            self.send_response(424)
            self.send_header("x-amzn-ErrorType", "ModelError")
        else:
            self.send_response(200)
            self.send_header("Content-Type", out_headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_predict_via_boto3_invoke_endpoint_against_the_local_server(server, sample_data, monkeypatch):
    SageMakerRuntimeStandIn.target = server.url
    runtime = ThreadingHTTPServer(("127.0.0.1", 0), SageMakerRuntimeStandIn)
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{runtime.server_address[1]}",
        }
        (path, _), *_ = sample_images(sample_data, 1)
        out = subprocess.run(
            [str(VENV_BIN / "imgclf"), "predict", str(path), "--endpoint-name", "digits", "--json", "--top-k", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)[0]["predictions"]) == 2
        bad = Path(server.log_path.parent / "bad.png")
        bad.write_bytes(b"not a png")
        out = subprocess.run(
            [str(VENV_BIN / "imgclf"), "predict", str(bad), "--endpoint-name", "digits"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 2 and "not an image" in out.stderr, out.stderr
    finally:
        runtime.shutdown()


def test_latency_and_worker_memory(server, sample_data):
    """Measured, printed for the report; asserted only loosely (shared 2-core machine)."""
    jpeg = jpeg_of(sample_images(sample_data, 1)[0][0])
    times = []
    for _ in range(100):
        started = time.monotonic()
        status, _, _ = server.invoke(jpeg, "image/jpeg")
        times.append(time.monotonic() - started)
        assert status == 200
    p50 = statistics.median(times) * 1000
    p95 = sorted(times)[94] * 1000
    rss = [w.memory_info().rss / 2**20 for w in server.workers()]
    print(f"\nJPEG sequential x100: p50 {p50:.1f} ms, p95 {p95:.1f} ms; worker RSS MB: {[round(r) for r in rss]}")
    assert p50 < 1000 and rss
