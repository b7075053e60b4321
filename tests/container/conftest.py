"""Container tier: the images built from the working tree (or reused when newer than it), one training run in
the train image shared by the train and serve tests, and every container and registry started here removed.

The serving tests run against both serve flavours (issue 13): `serve_image` is parametrized over the image with
torch (imgclf-serve, the CUDA base by default) and the torch-free CPU image (imgclf-serve:cpu-TAG). The shared
training run exports the validated ONNX engines (export-engines on, the default outside the fast test settings),
so one model.tar.gz serves both, as it does on SageMaker.

Missing prerequisites FAIL with the command that provides them (`bash scripts/docker_setup.sh`); nothing skips.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import containers as sm
from support.training import FAST_HYPERPARAMETERS

from imgclf.sample_data import write_sample_data

# Fast settings (random init: no weights can be downloaded here); 3 epochs, every value a string as SageMaker sends.
CONTAINER_HYPERPARAMETERS = FAST_HYPERPARAMETERS


@pytest.fixture(scope="session")
def docker_ready() -> None:
    problem = sm.docker_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def images(docker_ready) -> dict[str, str]:
    timings = sm.ensure_images()
    if timings:
        print(f"\ncontainer tier: image build steps {timings}")
    yield {"train": sm.TRAIN_IMAGE, "serve": sm.SERVE_IMAGE}
    sm.remove_test_containers()


@pytest.fixture(scope="session")
def cpu_image(docker_ready) -> str:
    """The torch-free CPU serving image (Dockerfile.serve-cpu), built only by the tests that use it."""
    timings = sm.ensure_cpu_image()
    if timings:
        print(f"\ncontainer tier: CPU image build steps {timings}")
    yield sm.SERVE_CPU_IMAGE
    sm.remove_test_containers()


# The serve flavours: the image with torch, and the torch-free CPU image (exported engines only).
SERVE_FLAVOURS = ("torch", "cpu")


@pytest.fixture(scope="session", params=SERVE_FLAVOURS)
def serve_image(request) -> str:
    """Each serve flavour's image in turn (the CPU image is built on first use)."""
    if request.param == "cpu":
        return request.getfixturevalue("cpu_image")
    return request.getfixturevalue("images")["serve"]


@pytest.fixture(scope="session")
def container_sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("container-sample")
    write_sample_data(root)
    return root


def sample_opt_ml(base: Path, sample_root: Path, overrides: dict[str, str] | None = None) -> Path:
    channels = {name: sample_root / name for name in ("train", "valid", "test")}
    return sm.opt_ml(base, channels, {**CONTAINER_HYPERPARAMETERS, **(overrides or {})})


@pytest.fixture(scope="session")
def trained(images, container_sample, tmp_path_factory) -> sm.TrainResult:
    """One real `docker run imgclf-train train` on a fake /opt/ml, shared by the train and serve tests; it exports
    the engines (what the CPU serve image needs), as a training job does by default."""
    base = sample_opt_ml(tmp_path_factory.mktemp("opt-ml"), container_sample, {"export-engines": "true"})
    result = sm.train(base, images["train"], timeout=1800)
    print(f"\ncontainer tier: training run {result.seconds:.0f} s (exit {result.returncode})")
    return result


@pytest.fixture(scope="session")
def served_model(trained, tmp_path_factory) -> Path:
    """The trained artifact as SageMaker hands it to an endpoint: model.tar.gz, unpacked."""
    assert trained.returncode == 0, trained.output[-3000:]
    return sm.model_from_tarball(trained.base / "model", tmp_path_factory.mktemp("handoff"))


@pytest.fixture
def fresh_opt_ml(tmp_path, container_sample):
    def make(**overrides: str) -> Path:
        return sample_opt_ml(tmp_path / "opt-ml", container_sample, overrides)

    yield make
    shutil.rmtree(tmp_path / "opt-ml", ignore_errors=True)
