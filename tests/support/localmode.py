"""SageMaker SDK local mode against our images: fixtures (registered by tests/localmode/conftest.py), helpers.

Each test runs a driver script (tests/localmode/drivers/) with an SDK venv's python (.venv-sdk2 or .venv-sdk3,
made by scripts/sdk_venvs.sh: SDK v2 and v3 are one distribution name and cannot share a venv). A driver prints
its result as one `IMGCLF_RESULT {json}` line; the full output (the containers' logs included) is kept.

Offline settings (DESIGN §4): a region, dummy AWS keys, telemetry off through SAGEMAKER_USER_CONFIG_OVERRIDE, and
file:// data. A file lock keeps two local-mode tests (from any checkout on this machine) from running at once; the
SDK leaves containers and its network behind, so each test removes what it started even when it fails.
Missing prerequisites (docker, compose, images, SDK venvs) FAIL with the command that provides them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import REPO, VENV_BIN, containers
from support.training import FAST_HYPERPARAMETERS

DRIVERS = REPO / "tests" / "localmode" / "drivers"
TRAIN_IMAGE = os.environ.get("IMGCLF_TRAIN_IMAGE", "imgclf-train:latest")
SERVE_IMAGE = os.environ.get("IMGCLF_SERVE_IMAGE", "imgclf-serve:latest")
LOCK_FILE = Path(os.environ.get("IMGCLF_LOCALMODE_LOCK", "/tmp/imgclf-localmode.lock"))
RESULT_MARK = "IMGCLF_RESULT "
SDK_VENVS = {2: REPO / ".venv-sdk2", 3: REPO / ".venv-sdk3"}
# The same fast settings as the other tiers, 2 epochs (the native run that serving and tuner tests share).
# Exported engines (the default outside the fast test settings): the CPU serve image serves only those.
LOCAL_HYPERPARAMETERS = {**FAST_HYPERPARAMETERS, "epochs": "2", "export-engines": "true"}
# Container fits prove the SageMaker mechanics (channels, metric lines, DDP, model.tar.gz), not accuracy: one
# epoch on a slice of the sample. On a shared 2-core machine a container epoch has taken minutes.
CONTAINER_HYPERPARAMETERS = {**FAST_HYPERPARAMETERS, "epochs": "1"}
DRIVER_TIMEOUT = float(os.environ.get("IMGCLF_LOCALMODE_TIMEOUT", "1500"))

TELEMETRY_YAML = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _docker_ok() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed: run `bash scripts/docker_setup.sh` (or `bash scripts/setup.sh --docker`)."
    r = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if r.returncode != 0:
        return f"the Docker daemon does not answer ({r.stderr.strip()[:200]}): run `bash scripts/docker_setup.sh`."
    return None


def _compose_ok() -> str | None:
    r = _run(["docker", "compose", "version"])
    if r.returncode == 0 and "v2" in r.stdout:
        return None
    if shutil.which("docker-compose"):
        return None
    return (
        "SageMaker local mode needs docker compose (Debian's docker-compose 1.29 works): "
        "run `bash scripts/docker_setup.sh` (apt-get install docker-compose)."
    )


@pytest.fixture(scope="session")
def docker_ready() -> None:
    for problem in (_docker_ok(), _compose_ok()):
        if problem:
            pytest.fail(problem, pytrace=False)


def _require_image(image: str) -> str:
    if image in (containers.TRAIN_IMAGE, containers.SERVE_IMAGE) and not os.environ.get("IMGCLF_NO_BUILD"):
        # The container tier's one build step: builds when missing or older than the sources, else returns.
        containers.ensure_images()
    if _run(["docker", "image", "inspect", image]).returncode:
        pytest.fail(
            f"Image {image} is not built: run `bash scripts/build_push.sh --local` "
            "(after `bash scripts/docker_setup.sh`; offline: --base-image imgclf-base:bookworm from "
            "scripts/base_image.sh).",
            pytrace=False,
        )
    return image


@pytest.fixture(scope="session")
def train_image(docker_ready) -> str:
    return _require_image(TRAIN_IMAGE)


@pytest.fixture(scope="session", params=("torch", "cpu"))
def serve_image(request, docker_ready) -> str:
    """Both serve flavours in turn (issue 13): the image with torch and the torch-free CPU image; `trained_model`
    is exported, so either serves it."""
    if request.param == "cpu":
        containers.ensure_cpu_image()
        return _require_image(containers.SERVE_CPU_IMAGE)
    return _require_image(SERVE_IMAGE)


@pytest.fixture(scope="session")
def torch_serve_image(docker_ready) -> str:
    """The image with torch alone: for a test whose model is trained in the job without the engine export."""
    return _require_image(SERVE_IMAGE)


def sdk_python(major: int) -> Path:
    python = SDK_VENVS[major] / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{SDK_VENVS[major].name} is missing: run `bash scripts/sdk_venvs.sh`.", pytrace=False)
    return python


@pytest.fixture
def localmode_lock():
    """One local-mode test at a time on this machine (they share Docker, ports and the sagemaker-local network)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as fh:
        started = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        if waited > 1:
            print(f"waited {waited:.0f} s for the local-mode lock")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _container_ids() -> set[str]:
    r = _run(["docker", "ps", "-aq", "--no-trunc"])
    return set(r.stdout.split()) if r.returncode == 0 else set()


def _inspect(ids: set[str]) -> list[dict]:
    if not ids:
        return []
    r = _run(["docker", "inspect", *sorted(ids)])
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []


@dataclass
class LocalModeRun:
    """What a test needs to run a driver; `workdir` holds every file the SDK and the driver write."""

    workdir: Path
    env: dict[str, str]

    def driver(self, name: str, sdk: int, args: dict, timeout: float = DRIVER_TIMEOUT) -> tuple[dict, str, float]:
        """Run drivers/<name>.py with the SDK venv's python; returns (result, full output, seconds)."""
        python = sdk_python(sdk)
        args_file = self.workdir / f"{name}.args.json"
        args_file.write_text(json.dumps(args))
        log_file = self.workdir / f"{name}.log"
        started = time.monotonic()
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                [str(python), str(DRIVERS / f"{name}.py"), str(args_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: a timeout kills compose and all
            )
            try:
                proc.wait(timeout=timeout)
            except BaseException:  # timeout, Ctrl-C, pytest stopping: the driver and its compose go too
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                    raise
        seconds = time.monotonic() - started
        output = log_file.read_text(errors="replace")
        print(f"driver {name}: {seconds:.1f} s, exit {proc.returncode}, log {log_file}")
        results = [line[len(RESULT_MARK) :] for line in output.splitlines() if line.startswith(RESULT_MARK)]
        assert proc.returncode == 0 and results, (
            f"driver {name} failed (exit {proc.returncode}, {seconds:.0f} s); last output:\n{output[-6000:]}"
        )
        return json.loads(results[-1]), output, seconds


@pytest.fixture
def localmode(tmp_path, localmode_lock):
    """Environment for an offline SDK run, and removal of every container/network it leaves behind."""
    workdir = tmp_path / "lm"
    workdir.mkdir()
    config = workdir / "sagemaker-config.yaml"
    config.write_text(TELEMETRY_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_")) and k != "VIRTUAL_ENV"}
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="AKIAIMGCLFLOCALMODE0",
        AWS_SECRET_ACCESS_KEY="imgclf-local-mode-dummy-secret",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(workdir / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-aws-credentials"),
        SAGEMAKER_USER_CONFIG_OVERRIDE=str(config),
        SAGEMAKER_ADMIN_CONFIG_OVERRIDE=str(config),
        SAGEMAKER_SUPPRESS_V2_WARNING="1",
        TMPDIR=str(workdir / "tmp"),
        PYTHONUNBUFFERED="1",
    )
    (workdir / "tmp").mkdir()
    docker_up = _docker_ok() is None
    before = _container_ids() if docker_up else set()
    try:
        yield LocalModeRun(workdir, env)
    finally:
        if docker_up:
            _cleanup(before, workdir)


def _cleanup(before: set[str], workdir: Path) -> None:
    ours = []
    for c in _inspect(_container_ids() - before):
        labels = c.get("Config", {}).get("Labels") or {}
        mounts = " ".join(m.get("Source", "") for m in c.get("Mounts", []))
        # Only containers this test started: the SDK writes its compose files and bind mounts under the
        # container_root every driver puts in the workdir (imgclf.sagemaker.target). Not by image: the container
        # tier's runs (another checkout's, under their own run label) use the same images and no lock.
        if str(workdir) in labels.get("com.docker.compose.project.working_dir", "") or str(workdir) in mounts:
            ours.append(c["Id"])
    if ours:
        print(f"cleanup: removing {len(ours)} container(s) left behind")
        _run(["docker", "rm", "-f", *ours], timeout=120)
    # The SDK's compose files name a `sagemaker-local` network; remove it once nothing uses it.
    r = _run(["docker", "network", "inspect", "sagemaker-local"])
    if r.returncode == 0 and not (json.loads(r.stdout)[0].get("Containers") or {}):
        _run(["docker", "network", "rm", "sagemaker-local"])
    # Containers write as root into the bind mounts; the workdir is ours to delete (tmp_path keeps 3 runs).
    shutil.rmtree(workdir / "tmp", ignore_errors=True)
    shutil.rmtree(workdir / "sagemaker-local" / "containers", ignore_errors=True)


def jpeg_samples(sample_data: Path, out: Path, per_class: int = 2, split: str = "test") -> dict[str, str]:
    """JPEG copies of sample images (the serving content type): {path: true label}."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    labels = {}
    for class_dir in sorted((sample_data / split).iterdir()):
        for src in sorted(class_dir.iterdir())[:per_class]:
            dst = out / f"{class_dir.name}_{src.stem}.jpg"
            Image.open(src).convert("RGB").save(dst, format="JPEG", quality=95)
            labels[str(dst)] = class_dir.name
    return labels


def local_top1(model_dir: Path, image_paths: list[str]) -> dict[str, str]:
    """The artifact's own top-1 for each image, in-process (what the endpoint must agree with)."""
    import torch

    from imgclf.artifact import load_artifact
    from imgclf.images import eval_transform, open_rgb

    art = load_artifact(model_dir, torch.device("cpu"))
    tf = eval_transform(art.meta)
    out = {}
    with torch.no_grad():
        for path in image_paths:
            logits = art.model(tf(open_rgb(Path(path))).unsqueeze(0))
            out[path] = art.index_to_name[int(logits.argmax(1))]
    return out


def top1(answer) -> str:
    """Top-1 label from the endpoint's JSON (default: [{label, probability}, ...])."""
    if isinstance(answer, dict):
        for key in ("predictions", "top_k", "topk", "results"):
            if key in answer:
                answer = answer[key]
                break
    if isinstance(answer, list) and answer and isinstance(answer[0], list):
        answer = answer[0]
    assert isinstance(answer, list) and answer and "label" in answer[0], f"unexpected answer {answer!r}"
    return str(max(answer, key=lambda a: a["probability"])["label"])


@pytest.fixture(scope="session")
def small_sample(sample_data, tmp_path_factory) -> Path:
    """A slice of the digits sample (20 train / 5 valid / 5 test images per class) for the container fits:
    they prove the SageMaker mechanics, and a shared 2-core machine trains the full set in minutes, not seconds."""
    root = tmp_path_factory.mktemp("small-sample")
    for split, n in (("train", 20), ("valid", 5), ("test", 5)):
        for class_dir in sorted((sample_data / split).iterdir()):
            dst = root / split / class_dir.name
            dst.mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:n]:
                shutil.copy(f, dst / f.name)
    return root


@pytest.fixture(scope="session")
def trained_model(sample_data, tmp_path_factory) -> dict[str, Path]:
    """A model trained natively (fast settings) and packed as SageMaker's model.tar.gz, for serving tests."""
    root = tmp_path_factory.mktemp("native-model")
    model_dir = root / "model"
    cmd = [str(VENV_BIN / "imgclf"), "train", "--data", str(sample_data), "--model-dir", str(model_dir)]
    for name, value in LOCAL_HYPERPARAMETERS.items():
        if value in ("true", "false"):
            cmd.append(f"--{name}" if value == "true" else f"--no-{name}")
        else:
            cmd += [f"--{name}", value]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tar = root / "model.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        for f in sorted(model_dir.iterdir()):
            t.add(f, arcname=f.name)
    return {"dir": model_dir, "tar": tar, "log": r.stdout}
