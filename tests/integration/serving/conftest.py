"""Real MMS servers for the serving integration tests: `imgclf serve` as a subprocess on a free port.

The model is trained once per session on the embedded digits with the real trainer (`imgclf.training.fit`);
IMGCLF_TEST_SERVING_MODEL=/path/to/model reuses an artifact you trained before (e.g. with `imgclf train`).

Every server runs in both serve flavours (issue 13), the `flavour` fixture: "torch" serves model.pt with the eager
engine (what the image with torch does on a GPU), "torch-free" runs `imgclf serve` and its MMS workers with torch
unimportable (support.served.FLAVOUR_ENV), as the CPU image does, on the exported ONNX engine (engine
auto). The model is trained with export-engines on so both can serve it. A module whose subject needs torch
(explanations, TorchServe, the engine comparison) overrides `flavour` with the torch one only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.served import FLAVOUR_ENV, Served
from support.training import FAST_HYPERPARAMETERS

# The trainer settings that fit the digits sample fast (random init, 32 px); 3 epochs reach ~85-98 %; the engines
# exported (and validated) at the end, as a training job does by default, for the torch-free flavour.
TRAIN_SETTINGS = {**FAST_HYPERPARAMETERS, "export-engines": "true"}


@pytest.fixture(scope="module", params=tuple(FLAVOUR_ENV))
def flavour(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def flavour_env(flavour) -> dict[str, str]:
    """The environment that makes `imgclf serve` (and its workers) run as the flavour does."""
    return FLAVOUR_ENV[flavour]


@pytest.fixture(scope="session")
def trained_model(sample_data, tmp_path_factory) -> Path:
    reuse = os.environ.get("IMGCLF_TEST_SERVING_MODEL")
    if reuse:
        return Path(reuse)
    from imgclf.hyperparameters import Hyperparameters
    from imgclf.training import RunConfig, fit

    out = tmp_path_factory.mktemp("served") / "model"
    hp = Hyperparameters.from_mapping(TRAIN_SETTINGS)
    cfg = RunConfig(
        train_dir=sample_data / "train", model_dir=out, valid_dir=sample_data / "valid", test_dir=sample_data / "test"
    )
    fit(hp, cfg)
    return out


@pytest.fixture
def serve(tmp_path, flavour_env):
    """Factory: serve(model_dir, *args, env=...) -> started Served in the flavour; all are cleaned up after the test."""
    started: list[Served] = []

    def _serve(model_dir, *args, env=None) -> Served:
        s = Served(model_dir, tmp_path / f"serve-{len(started)}.log", *args, env={**flavour_env, **(env or {})}).start()
        started.append(s)
        return s

    yield _serve
    for s in started:
        s.cleanup()


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory, flavour_env):
    """One healthy single-model server (1 worker, no micro-batching) in the flavour, shared by a module's tests."""
    s = Served(trained_model, tmp_path_factory.mktemp("serve") / "serve.log", env=flavour_env).start()
    s.wait_healthy()
    yield s
    s.cleanup()
