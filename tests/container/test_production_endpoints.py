"""The serve container's side of the production endpoint options, which SageMaker local mode cannot run:

- Asynchronous Inference: with SAGEMAKER_MAX_PAYLOAD_IN_MB=200 (what `imgclf sagemaker deploy --async-output`
  sets) a body far above the 6 MB real-time limit is answered; at the default the same body gets 413.
- Serverless Inference: under `docker run --memory` at the documented size (3072 MB), CPU only, at the documented
  concurrency (5, `--serverless 3072:5`), every request is answered and the container is not OOM-killed.
- Request metrics: `docker logs` holds bare EMF JSON lines (no MMS prefix), one per request batch, valid per the
  specification, with the dimensions deploy sets (IMGCLF_ENDPOINT_NAME / IMGCLF_ENDPOINT_VARIANT).

Each runs against both serve flavours (`serve_image`: the image with torch and the torch-free CPU image, the one
a serverless endpoint would use).
"""

from __future__ import annotations

import io
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import containers as sm
from support.emf import emf_lines

from imgclf.sagemaker import endpoints

pytestmark = pytest.mark.container

SERVERLESS_MB = 3072  # README "Production endpoints": the documented serverless size for the ResNet-18 image
CONCURRENCY = endpoints.DEFAULT_SERVERLESS_CONCURRENCY
REQUESTS_PER_CLIENT = 4


def post_large(url: str, body: bytes, content_type: str, timeout: float = 120) -> tuple[int, bytes]:
    """POST /invocations as curl sends a large body (`Expect: 100-continue`): a front-end that refuses the size
    answers 413 before the body is sent, instead of closing the connection mid-upload (a broken pipe)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=timeout) as sock, sock.makefile("rb") as answer:
        sock.sendall(head.encode())

        def response() -> tuple[int, dict[str, str]]:
            status = int(answer.readline().split()[1])
            headers = {}
            while (line := answer.readline().strip()) != b"":
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            return status, headers

        status, headers = response()
        if status == 100:
            sock.sendall(body)
            status, headers = response()
        length = int(headers.get("content-length", "0"))
        return status, answer.read(length) if length else b""


@pytest.fixture(scope="module")
def big_npy() -> bytes:
    """A uint8 2900 x 2900 RGB image as .npy: ~24 MB, four times the real-time limit, inside the request budget."""
    array = np.random.default_rng(0).integers(0, 256, size=(2900, 2900, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, array)
    body = buffer.getvalue()
    assert len(body) > 4 * endpoints.REALTIME_MAX_PAYLOAD_MB * 2**20
    return body


@pytest.fixture(scope="module")
def serverless_sized(serve_image, served_model):
    """The real-time defaults, under the serverless memory size, with the metrics' dimensions deploy sets."""
    env = {"IMGCLF_ENDPOINT_NAME": "ep-test", "IMGCLF_ENDPOINT_VARIANT": "AllTraffic"}
    docker_args = ("--memory", f"{SERVERLESS_MB}m", "--memory-swap", f"{SERVERLESS_MB}m")
    with sm.serve(served_model, serve_image, env=env, docker_args=docker_args) as server:
        yield server


def test_async_payload_setting_accepts_a_body_far_above_the_realtime_limit(serve_image, served_model, big_npy):
    with sm.serve(served_model, serve_image, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "200"}) as server:
        status, answer = post_large(server.url, big_npy, "application/x-npy")
    assert status == 200, answer[:500]
    assert b'"predictions"' in answer


def test_the_same_body_is_413_at_the_default_limit(serverless_sized, big_npy):
    status, _ = post_large(serverless_sized.url, big_npy, "application/x-npy")
    assert status == 413
    assert serverless_sized.ping() == 200


def test_serverless_memory_at_the_documented_concurrency_answers_every_request(serverless_sized, container_sample):
    bodies = [f.read_bytes() for f in sorted((container_sample / "test").rglob("*.png"))][
        : CONCURRENCY * REQUESTS_PER_CLIENT
    ]

    def client(i: int) -> list[int]:
        return [
            serverless_sized.invoke(bodies[(i + j) % len(bodies)], "image/png")[0] for j in range(REQUESTS_PER_CLIENT)
        ]

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        statuses = [s for batch in pool.map(client, range(CONCURRENCY)) for s in batch]
    print(f"\n{len(statuses)} requests, {CONCURRENCY} at a time, under {SERVERLESS_MB} MB: "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    assert statuses == [200] * CONCURRENCY * REQUESTS_PER_CLIENT
    state = sm.docker("inspect", "-f", "{{.State.OOMKilled}} {{.State.Running}}", serverless_sized.name).stdout
    assert state.split() == ["false", "true"]
    assert serverless_sized.ping() == 200


def test_request_metrics_are_bare_emf_lines_in_the_container_log(serverless_sized, container_sample):
    body = next((container_sample / "test").rglob("*.png")).read_bytes()
    for _ in range(3):
        assert serverless_sized.invoke(body, "image/png")[0] == 200
    time.sleep(1)  # the log driver
    lines = emf_lines(serverless_sized.logs())
    assert len(lines) >= 3, serverless_sized.logs()[-3000:]
    assert {(r["EndpointName"], r["EndpointVariant"]) for r in lines} == {("ep-test", "AllTraffic")}
    assert all(r["Images"] >= 1 and r["TotalMs"] > 0 for r in lines if r["Status2xx"])
