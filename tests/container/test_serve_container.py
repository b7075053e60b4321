"""`docker run imgclf-serve serve` with the model the train container wrote (model.tar.gz, unpacked as SageMaker
does), on a published 127.0.0.1 port: /ping, real images, bad inputs, SIGTERM; a tampered artifact refused; and
Grad-CAM maps that light up a digit pasted into a corner (a model trained for seconds, support/corner_digits.py).

Everything but Grad-CAM runs against both serve flavours (`serve_image`: the image with torch and the torch-free
CPU image); explanations need torch, and the CPU image's refusal of them is in test_serve_cpu_container.py."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from support import containers as sm
from support import corner_digits as cd

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model

pytestmark = pytest.mark.container


def _sample_images(sample, per_class: int = 3) -> list[tuple[bytes, str]]:
    rng = random.Random(0)
    picked = []
    for class_dir in sorted((sample / "test").iterdir()):
        files = sorted(class_dir.iterdir())
        picked += [(f.read_bytes(), class_dir.name) for f in rng.sample(files, per_class)]
    return picked


@pytest.fixture(scope="module")
def server(serve_image, served_model):
    with sm.serve(served_model, serve_image) as srv:
        print(f"\nserve container: docker run -> /ping 200 in {srv.started_s:.1f} s")
        yield srv


def test_ping_is_healthy_and_fast(server):
    assert server.ping(timeout=2) == 200


def test_real_sample_images_are_classified(server, container_sample):
    samples = _sample_images(container_sample)
    correct = 0
    for body, label in samples:
        status, payload = server.invoke(body, "image/png")
        assert status == 200, payload[:500]
        top = json.loads(payload)["predictions"][0][0]
        assert set(top) >= {"label", "probability"}
        correct += top["label"] == label
    # The 3-epoch model scores well above 50 % on the test split (test_train_container asserts it): same here.
    assert correct / len(samples) > 0.5, f"{correct}/{len(samples)} correct"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n garbage, not an image", "image/png"),
        (b"", "image/jpeg"),
        (b"a,b,c\n1,2,3\n", "text/csv"),
        (b'{"no": "image field"}', "application/json"),
    ],
    ids=["garbage-png", "empty-body", "unsupported-type", "json-without-image"],
)
def test_bad_input_is_a_client_error_and_the_server_keeps_answering(server, body, content_type):
    status, payload = server.invoke(body, content_type)
    assert 400 <= status < 500, (status, payload[:500])
    assert server.ping() == 200


def test_sigterm_stops_the_server_in_seconds(serve_image, served_model):
    with sm.serve(served_model, serve_image) as srv:
        code, seconds = sm.stop(srv.name, timeout_s=30)
    print(f"\nserve container: docker stop -> exit {code} in {seconds:.1f} s")
    assert seconds < 10, f"took {seconds:.1f} s to stop (SIGKILL comes at 30 s): SIGTERM did not stop the server"
    assert code != 137, "killed, not stopped"


def test_bind_to_port_is_honoured(serve_image, served_model):
    # The accept-bind-to-port label promises this: SageMaker picks the port through SAGEMAKER_BIND_TO_PORT.
    with sm.serve(served_model, serve_image, env={"SAGEMAKER_BIND_TO_PORT": "9090"}, container_port=9090) as srv:
        assert srv.ping() == 200


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    """A 3-class model written by the trainer's writer (checksums recorded): no training run needed."""
    out = tmp_path_factory.mktemp("small-artifact") / "model"
    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 32), ["a", "b", "c"], out)
    return out


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _swap_two_names(path) -> None:  # still valid JSON, still 3 classes: only the checksum tells
    names = json.loads(path.read_text())
    names["0"], names["1"] = names["1"], names["0"]
    path.write_text(json.dumps(names))


def _one_more_class(path) -> None:  # imgclf.json holds the checksums, not its own: validation tells
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "num_classes": meta["num_classes"] + 1}))


@pytest.mark.parametrize(
    ("name", "tamper", "message"),
    [
        ("model.pt", _flip_a_byte, "model.pt does not match the sha256 recorded in imgclf.json"),
        ("index_to_name.json", _swap_two_names, "index_to_name.json does not match the sha256"),
        ("imgclf.json", _one_more_class, "index_to_name.json names 3 classes; the model's head has 4 (imgclf.json)"),
    ],
    ids=["model-pt-one-byte", "index-to-name-swapped", "imgclf-json-class-count"],
)
def test_a_tampered_artifact_stops_the_container_with_the_file_named(
    serve_image, small_artifact, tmp_path, name, tamper, message
):
    # Issue 12: refused before MMS starts (in seconds, not after SAGEMAKER_STARTUP_TIMEOUT), the reason in the log.
    model = tmp_path / "model"
    shutil.copytree(small_artifact, model)
    tamper(model / name)
    done = sm.serve_until_exit(model, serve_image, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert message in done.stderr, done.stderr[-2000:]


# The issue asks for it through the serve container for ResNet-18 and a non-ResNet family (RegNetY-400MF).
@pytest.mark.parametrize("arch", sorted(cd.RECIPES))
def test_an_explained_request_lights_up_the_corner_that_holds_the_digit(images, tmp_path, arch):
    """The issue's "done when", through the serve image: explain=gradcam as the Accept parameter (the form batch
    transform sends); the hottest cell of each map lies in the digit's quadrant."""
    model_dir = cd.save(cd.trained(arch, *cd.RECIPES[arch]), arch, tmp_path / "model")
    accept = "application/json; explain=gradcam"
    with sm.serve(model_dir, images["serve"]) as srv:
        hits, missed = cd.explained_hits(lambda body: srv.invoke(body, "application/json", accept))
    assert hits >= cd.MIN_HITS, f"{arch}: the hottest cell missed the digit {cd.PROBES - hits} times: {missed}"
