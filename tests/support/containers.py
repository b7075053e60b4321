"""Run the images the way SageMaker does: "train on a fake /opt/ml" and "serve and wait for /ping".

One helper for every tier that runs our containers (like aws/sagemaker-scikit-learn-container's
test/utils/local_mode.py). Plain functions over the docker CLI, no fixtures: tests/container/conftest.py and
support/localmode.py wrap them.

- `ensure_images()` builds both images with the project's one build command (`scripts/build_push.sh --local`) on
  the offline test base (`scripts/base_image.sh`) and the wheelhouse (`docker/wheelhouse.sh`), or reuses them
  when they are newer than every file that goes into them (IMGCLF_REBUILD=1 forces a build, IMGCLF_NO_BUILD=1
  takes them as they are).
- `ensure_cpu_image()` does the same for the torch-free CPU serving image (Dockerfile.serve-cpu), on its own: the
  tests that need it build it, the others do not wait for it.
- `ensure_wheelhouse()` is that build's wheelhouse step on its own (the packaging test installs from it too).
- `opt_ml()` lays out what SageMaker writes before `train`; `train()` / `start_train()` run `IMAGE train` on it.
- `model_from_tarball()` is the hand-off: model/ -> model.tar.gz -> unpacked, as SageMaker does.
- `Server` (`with serve(...) as server:`) runs `IMAGE serve` on a free 127.0.0.1 port and waits for /ping;
  `serve_until_exit()` runs it in the foreground for a model that must be refused.
Every container gets the label `imgclf.test=1` (`scripts/clean_docker.sh` removes leftovers).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import REPO
from support.ports import free_port

TRAIN_IMAGE = os.environ.get("IMGCLF_TRAIN_IMAGE", "imgclf-train:latest")
SERVE_IMAGE = os.environ.get("IMGCLF_SERVE_IMAGE", "imgclf-serve:latest")
SERVE_CPU_IMAGE = os.environ.get("IMGCLF_SERVE_CPU_IMAGE", "imgclf-serve:cpu-latest")
TEST_BASE = os.environ.get("IMGCLF_TEST_BASE", "imgclf-base:bookworm")
TEST_LABEL = "imgclf.test=1"
# This pytest process's containers also carry a run label, so its clean-up leaves a concurrent run's alone.
RUN_LABEL = f"imgclf.test.run={uuid.uuid4().hex[:12]}"
LABELS = ["--label", TEST_LABEL, "--label", RUN_LABEL]
# docker/wheelhouse.sh's output, for the test base's Python (Debian bookworm: 3.11).
WHEELHOUSE = REPO / "wheelhouse"
WHEELHOUSE_PYTHON = "3.11"
# What goes into the images: newer than the image -> rebuild (BuildKit's cache makes an unchanged rebuild cheap,
# but a pruned cache does not; this keeps CI from rebuilding 6 GB when nothing changed).
IMAGE_INPUTS = ("Dockerfile.train", "Dockerfile.serve", "pyproject.toml", "README.md", "docker", "src")
CPU_IMAGE_INPUTS = ("Dockerfile.serve-cpu", "pyproject.toml", "README.md", "docker", "src")


def docker_cli() -> str:
    """A client that can build with BuildKit (same rule as scripts/build_push.sh); any client runs containers."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
        if ok or not os.path.exists("/usr/bin/docker"):
            return "docker"
    return "/usr/bin/docker"


DOCKER = docker_cli()


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def docker_problem() -> str | None:
    """None when a daemon answers, else what to run."""
    if not shutil.which(DOCKER):
        return "docker is not installed: run `bash scripts/docker_setup.sh` (or `bash scripts/setup.sh --docker`)."
    r = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"the Docker daemon does not answer ({r.stderr.strip()[:200]}): run `bash scripts/docker_setup.sh`."
    return None


def _newest_input_mtime(inputs: tuple[str, ...] = IMAGE_INPUTS) -> float:
    newest = 0.0
    for name in inputs:
        path = REPO / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            if "__pycache__" not in f.parts:
                newest = max(newest, f.stat().st_mtime)
    return newest


def image_created(image: str) -> float | None:
    r = docker("image", "inspect", "-f", "{{.Created}}", image, check=False)
    if r.returncode != 0:
        return None
    # 2026-11-23T10:41:02.123456789Z -> epoch seconds (docker prints RFC 3339 in UTC)
    stamp = r.stdout.strip().rstrip("Z").split(".")[0]
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def images_current() -> bool:
    newest = _newest_input_mtime()
    created = [image_created(img) for img in (TRAIN_IMAGE, SERVE_IMAGE)]
    return all(c is not None and c > newest for c in created)


def ensure_images(log=print) -> dict[str, float]:
    """Both images, built from the working tree unless current; returns {step: seconds} of what ran."""
    timings: dict[str, float] = {}
    if os.environ.get("IMGCLF_NO_BUILD") == "1":  # built by the caller (CI step): use them as they are
        missing = [img for img in (TRAIN_IMAGE, SERVE_IMAGE) if image_created(img) is None]
        if missing:
            raise RuntimeError(f"IMGCLF_NO_BUILD=1 but {missing} do not exist: run scripts/build_push.sh --local")
        return timings
    if images_current() and os.environ.get("IMGCLF_REBUILD") != "1":
        return timings
    train_tag, serve_tag = TRAIN_IMAGE.rsplit(":", 1), SERVE_IMAGE.rsplit(":", 1)
    if train_tag[0] != "imgclf-train" or serve_tag[0] != "imgclf-serve" or train_tag[1] != serve_tag[1]:
        raise RuntimeError(f"cannot build {TRAIN_IMAGE}/{SERVE_IMAGE}: build_push.sh tags imgclf-{{train,serve}}:TAG")
    # The stale images go first: a cold build cannot reuse their layers, and keeping them would add ~7 GB to the
    # build's peak disk use on a machine that may have little.
    docker("rmi", TRAIN_IMAGE, SERVE_IMAGE, check=False)
    timings["base_image"] = _run_step(["bash", "scripts/base_image.sh", TEST_BASE], log)
    timings.update(ensure_wheelhouse(log))
    build = ["bash", "scripts/build_push.sh", "--local", "--local-tag", train_tag[1], "--base-image", TEST_BASE]
    timings["build"] = _run_step([*build, "--only", "train,serve"], log)
    return timings


def ensure_cpu_image(log=print) -> dict[str, float]:
    """The CPU serving image (imgclf-serve:cpu-TAG), built unless newer than its inputs (IMGCLF_NO_BUILD=1: as it
    is; IMGCLF_REBUILD=1: always). Small (no torch): a cold build is a few minutes, a cached one seconds."""
    created = image_created(SERVE_CPU_IMAGE)
    if os.environ.get("IMGCLF_NO_BUILD") == "1":
        if created is None:
            raise RuntimeError(f"IMGCLF_NO_BUILD=1 but {SERVE_CPU_IMAGE} does not exist: run scripts/build_push.sh")
        return {}
    current = created is not None and created > _newest_input_mtime(CPU_IMAGE_INPUTS)
    if current and os.environ.get("IMGCLF_REBUILD") != "1":
        return {}
    repo, tag = SERVE_CPU_IMAGE.rsplit(":", 1)
    if repo != "imgclf-serve" or not tag.startswith("cpu-"):
        raise RuntimeError(f"cannot build {SERVE_CPU_IMAGE}: build_push.sh tags the CPU image imgclf-serve:cpu-TAG")
    timings = {"base_image": _run_step(["bash", "scripts/base_image.sh", TEST_BASE], log)}
    timings.update(ensure_wheelhouse(log))
    build = ["bash", "scripts/build_push.sh", "--local", "--local-tag", tag.removeprefix("cpu-")]
    timings["build_cpu"] = _run_step([*build, "--base-image", TEST_BASE, "--only", "serve-cpu"], log)
    return timings


def _run_step(cmd: list[str], log) -> float:
    start = time.monotonic()
    env = {**os.environ, "DOCKER": DOCKER}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    log(f"{' '.join(cmd)}: {seconds:.0f} s")
    return seconds


def ensure_wheelhouse(log=print) -> dict[str, float]:
    """wheelhouse/ filled for the test base's Python (3.11) by docker/wheelhouse.sh, unless it was filled since
    the lock last changed (pip would only re-check every file over the network); returns {step: seconds}."""
    marker = WHEELHOUSE / "PYTHON_VERSION"
    lock = REPO / "docker" / "constraints.txt"
    if marker.is_file() and marker.stat().st_mtime > lock.stat().st_mtime:
        return {}
    cmd = ["bash", "docker/wheelhouse.sh", "--python-version", WHEELHOUSE_PYTHON]
    return {"wheelhouse": _run_step(cmd, log)}


# ---- training ----


def opt_ml(base: Path, channels: dict[str, Path], hyperparameters: dict[str, str]) -> Path:
    """What SageMaker writes before `train`: config JSONs (every hyperparameter a string) and channel folders."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    assert all(isinstance(v, str) for v in hyperparameters.values()), "SageMaker passes strings only"
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for name in channels})
    )
    for name, src in channels.items():
        shutil.copytree(src, base / "input" / "data" / name)
    for sub in ("model", "output", "checkpoints"):
        (base / sub).mkdir(exist_ok=True)
    return base


def container_name(prefix: str) -> str:
    return f"imgclf-test-{prefix}-{uuid.uuid4().hex[:8]}"


def _train_cmd(image: str, base: Path, name: str, args: list[str], env: dict[str, str] | None) -> list[str]:
    cmd = [DOCKER, "run", "--name", name, *LABELS, "--hostname", "algo-1", "-v", f"{base}:/opt/ml"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    return [*cmd, image, *args]


@dataclass
class TrainResult:
    returncode: int
    output: str
    seconds: float
    base: Path

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else None


def train(
    base: Path,
    image: str = TRAIN_IMAGE,
    args: tuple[str, ...] = ("train",),
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> TrainResult:
    """`docker run IMAGE train` on base (the fake /opt/ml); the container is removed afterwards."""
    name = container_name("train")
    start = time.monotonic()
    try:
        r = subprocess.run(
            _train_cmd(image, base, name, list(args), env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    finally:
        docker("rm", "-f", name, check=False)
    return TrainResult(r.returncode, r.stdout, time.monotonic() - start, base)


def start_train(
    base: Path, image: str = TRAIN_IMAGE, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen]:
    """`docker run IMAGE train` in the background: (container name, the attached `docker run` process)."""
    name = container_name("train")
    proc = subprocess.Popen(
        _train_cmd(image, base, name, ["train"], env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return name, proc


def stop(name: str, timeout_s: int = 30) -> tuple[int, float]:
    """`docker stop -t timeout_s` (SIGTERM, SIGKILL after the timeout): (exit code, seconds it took)."""
    start = time.monotonic()
    docker("stop", "-t", str(timeout_s), name, timeout=timeout_s + 60)
    seconds = time.monotonic() - start
    code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip())
    return code, seconds


def model_from_tarball(model_dir: Path, workdir: Path) -> Path:
    """SageMaker's hand-off: tar /opt/ml/model into model.tar.gz, then unpack it where the endpoint mounts it."""
    tarball = workdir / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    unpacked = workdir / "opt-ml-model"
    unpacked.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked


# ---- serving ----


@dataclass
class Server:
    name: str
    url: str
    started_s: float  # docker run -> /ping 200

    def ping(self, timeout: float = 2) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def logs(self) -> str:
        r = docker("logs", self.name, check=False)
        return r.stdout + r.stderr


def wait_for_ping(url: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        state = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        if state != "true":
            logs = docker("logs", name, check=False)
            raise RuntimeError(
                f"serve container exited before /ping answered:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
            )
        time.sleep(0.5)
    logs = docker("logs", name, check=False)
    raise TimeoutError(f"/ping not 200 within {timeout} s:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


@contextlib.contextmanager
def serve(
    model_dir: Path,
    image: str = SERVE_IMAGE,
    env: dict[str, str] | None = None,
    startup_timeout: float = 300,
    container_port: int = 8080,
    docker_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """`docker run IMAGE serve` with model_dir at /opt/ml/model (read-only), published on 127.0.0.1:<free port>;
    `docker_args` go to `docker run` as they are (e.g. ("--memory", "3072m"))."""
    name = container_name("serve")
    port = free_port()
    cmd = [DOCKER, "run", "-d", "--name", name, *LABELS, "-p", f"127.0.0.1:{port}:{container_port}"]
    cmd += ["-v", f"{model_dir}:/opt/ml/model:ro"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    start = time.monotonic()
    subprocess.run([*cmd, *docker_args, image, "serve"], check=True, capture_output=True, text=True, timeout=60)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, name, startup_timeout)
        yield Server(name=name, url=url, started_s=time.monotonic() - start)
    finally:
        docker("rm", "-f", name, check=False)


def serve_until_exit(model_dir: Path, image: str = SERVE_IMAGE, timeout: float = 120) -> subprocess.CompletedProcess:
    """`docker run IMAGE serve` in the foreground, for a model that must not be served: its exit status and log.
    One still running after `timeout` s fails the test with its log, and is removed."""
    name = container_name("serve")
    cmd = [DOCKER, "run", "--name", name, *LABELS, "-v", f"{model_dir}:/opt/ml/model:ro", image, "serve"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        logs = docker("logs", name, check=False)
        raise AssertionError(
            f"serve container still running after {timeout} s:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
        ) from None
    finally:
        docker("rm", "-f", name, check=False)


def remove_test_containers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)
