"""Server lifecycle on real MMS: micro-batching, SIGTERM cleanup, a broken model, multi-model load/unload."""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.served import http
from support.training import break_exported_engine_consistently, break_weights_consistently, export_onnx_on_noise

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model

pytestmark = pytest.mark.integration


def digit_pngs(sample_data, n):
    out = []
    for cls in range(10):
        out += [(p.read_bytes(), str(cls)) for p in sorted((sample_data / "test" / str(cls)).glob("*.png"))[:1]]
    return out[:n]


def test_concurrent_requests_share_one_forward_pass_then_sigterm_leaves_no_process(serve, trained_model, sample_data):
    s = serve(trained_model, "--batch-size", "8", "--max-batch-delay-ms", "400")
    s.wait_healthy()
    images = digit_pngs(sample_data, 6)
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(lambda im: s.invoke(im[0]), images))
    assert all(status == 200 for status, _, _ in answers)
    batches = [(int(a), int(b)) for a, b in re.findall(r"forward pass: (\d+) images from (\d+) requests", s.output())]
    assert batches and max(requests for _, requests in batches) > 1, s.output()[-2000:]
    assert sum(images_ for images_, _ in batches) <= len(images)

    workers = s.workers()
    assert workers, "no model_service_worker found"
    stop_s = s.terminate()
    print(f"\nSIGTERM -> exit: {stop_s:.2f} s")
    assert s.proc.returncode == 0 and stop_s < 10
    time.sleep(0.5)
    assert s.alive_pids() == [], "processes left after SIGTERM"


def test_a_model_that_cannot_load_never_opens_the_port(serve, tmp_path, flavour):
    broken = tmp_path / "broken"
    save_artifact(build_model("resnet18", 2), ModelMeta.for_training("resnet18", 2, 32), ["a", "b"], broken)
    break_weights_consistently(broken)
    if flavour == "torch-free":
        break_exported_engine_consistently(broken)
    s = serve(broken)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "could not load the model" not in s.output():
        assert s.ping() is None, "/ping answered for a model that cannot load"
        time.sleep(0.2)
    assert "could not load the model" in s.output()
    assert s.ping() is None and s.proc.poll() is None
    s.terminate()
    time.sleep(0.5)
    assert s.alive_pids() == []


def test_multi_model_endpoint_loads_invokes_and_unloads_two_models(
    serve, trained_model, tmp_path, sample_data, flavour
):
    store = tmp_path / "models"
    shutil.copytree(trained_model, store / "digits" / "model")
    tiny = store / "tiny" / "model"
    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 48), ["a", "b", "c"], tiny)
    if flavour == "torch-free":
        export_onnx_on_noise(tiny)
    s = serve(store, "--multi-model")
    s.wait_healthy()
    for name in ("digits", "tiny"):
        status, _, body = http(
            "POST", f"{s.url}/models?url={store / name / 'model'}&model_name={name}&initial_workers=1&synchronous=true"
        )
        assert status == 200, body
    png, label = digit_pngs(sample_data, 1)[0]
    headers = {"Content-Type": "image/png"}
    status, _, body = http("POST", f"{s.url}/models/digits/invoke", png, headers)
    assert status == 200 and json.loads(body)["predictions"][0][0]["label"] == label
    status, _, body = http("POST", f"{s.url}/models/tiny/invoke", png, headers)
    assert status == 200 and {p["label"] for p in json.loads(body)["predictions"][0]} == {"a", "b", "c"}
    assert http("DELETE", f"{s.url}/models/digits")[0] == 200
    assert http("POST", f"{s.url}/models/digits/invoke", png, headers)[0] == 404
    assert http("POST", f"{s.url}/models/tiny/invoke", png, headers)[0] == 200
    s.terminate()
    time.sleep(0.5)
    assert s.alive_pids() == []
