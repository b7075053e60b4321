"""scripts/build_push.sh against a real registry: Debian's docker-registry on a free 127.0.0.1 port receives the
push, moto server (support/moto.py) answers the AWS calls (ECR + STS) through awscli's endpoint override; no real AWS.

By default the pushed images are small stand-ins tagged like ours (the script does not care what the image holds,
and gzipping 2 x 6 GB on a 2-core CI machine costs minutes); IMGCLF_PUSH_REAL_IMAGES=1 pushes the real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from support import VENV_BIN
from support import containers as sm
from support.moto import aws_env, moto_server, wait_http
from support.ports import free_port

pytestmark = pytest.mark.container

REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture
def registry(tmp_path):
    if not shutil.which("docker-registry"):
        pytest.fail("docker-registry missing: run `bash scripts/docker_setup.sh`", pytrace=False)
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=tmp_path / "registry-data", port=port))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def moto():
    with moto_server() as url:
        yield url


ROLES = ("train", "serve", "serve-cpu")


def _pushed_name(role: str, train_repo: str, serve_repo: str, tag: str, registry: str = "") -> str:
    """build_push.sh's naming: the CPU flavour goes to the serve repository, its tags prefixed cpu-."""
    repo = train_repo if role == "train" else serve_repo
    name = f"{repo}:{'cpu-' if role == 'serve-cpu' else ''}{tag}"
    return f"{registry}/{name}" if registry else name


@pytest.fixture
def push_images(docker_ready, request, tmp_path):
    """(local tag, {role: image}) to push: the real images, or stand-ins on the test base image."""
    if os.environ.get("IMGCLF_PUSH_REAL_IMAGES") == "1":
        request.getfixturevalue("images")
        tag = sm.TRAIN_IMAGE.rsplit(":", 1)[1]
        request.getfixturevalue("cpu_image")
        yield tag, {"train": sm.TRAIN_IMAGE, "serve": sm.SERVE_IMAGE, "serve-cpu": sm.SERVE_CPU_IMAGE}
        return
    subprocess.run(["bash", "scripts/base_image.sh", sm.TEST_BASE], cwd=sm.REPO, check=True, capture_output=True)
    tag = f"pushtest-{os.getpid()}"
    made = {}
    for role in ROLES:
        (tmp_path / f"Dockerfile.{role}").write_text(
            f'FROM {sm.TEST_BASE}\nLABEL org.opencontainers.image.title="imgclf-{role}"\nCMD ["{role}"]\n'
        )
        made[role] = _pushed_name(role, "imgclf-train", "imgclf-serve", tag)
        sm.docker("build", "-q", "-t", made[role], "-f", str(tmp_path / f"Dockerfile.{role}"), str(tmp_path))
    yield tag, made
    sm.docker("rmi", *made.values(), check=False)


def test_push_creates_repositories_and_pull_gives_the_same_image(registry, moto, push_images, tmp_path):
    local_tag, local = push_images
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "DOCKER": sm.DOCKER,
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),  # docker login writes here, not to ~/.docker
        **aws_env(moto, tmp_path),
    }
    repos = {"train": f"imgclf-train-{os.getpid()}", "serve": f"imgclf-serve-{os.getpid()}"}
    cmd = ["bash", "scripts/build_push.sh", "--no-build", "--local-tag", local_tag, "--registry", registry]
    cmd += ["--train-repo", repos["train"], "--serve-repo", repos["serve"], "--tag", "v-test", "--latest"]
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=sm.REPO, env=env, capture_output=True, text=True, timeout=900)
    print(f"\nbuild_push.sh --no-build push: {time.monotonic() - start:.0f} s")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    uris = r.stdout.split()
    expected = [_pushed_name(role, *repos.values(), tag, registry) for role in ROLES for tag in ("v-test", "latest")]
    assert uris == expected

    # ECR repositories were created through the AWS API (moto), not assumed.
    listed = subprocess.run(
        [str(VENV_BIN / "aws"), "--endpoint-url", moto, "ecr", "describe-repositories", "--query",
         "repositories[].repositoryName", "--output", "text"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert set(listed.stdout.split()) >= set(repos.values()), listed.stdout + listed.stderr

    for role in ROLES:
        local_id = sm.docker("image", "inspect", "-f", "{{.Id}}", local[role]).stdout.strip()
        uri = _pushed_name(role, *repos.values(), "v-test", registry)
        sm.docker("rmi", uri, _pushed_name(role, *repos.values(), "latest", registry))
        try:
            sm.docker("pull", uri, timeout=900)
            assert sm.docker("image", "inspect", "-f", "{{.Id}}", uri).stdout.strip() == local_id
        finally:
            sm.docker("rmi", uri, check=False)


def test_local_and_help_need_no_aws(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no aws on PATH
    r = subprocess.run(
        ["bash", "scripts/build_push.sh", "--help"], cwd=sm.REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and "--local" in r.stdout and "--platform" in r.stdout


def test_missing_aws_cli_is_a_clear_error(push_images):
    env = {**os.environ, "PATH": "/usr/bin:/bin", "AWS": "aws-not-installed", "DOCKER": sm.DOCKER}
    tag = push_images[0]
    r = subprocess.run(
        ["bash", "scripts/build_push.sh", "--no-build", "--local-tag", tag, "--region", "us-east-1"],
        cwd=sm.REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0
    assert "aws CLI not found" in r.stderr


def test_unknown_option_is_a_clear_error():
    r = subprocess.run(["bash", "scripts/build_push.sh", "--regoin", "x"], cwd=sm.REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "unknown option '--regoin'" in r.stderr
