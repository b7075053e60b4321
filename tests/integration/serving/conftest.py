"""Real MMS servers for the serving integration tests: `imgclf serve` as a subprocess on a free port.

The model is trained once per session on the embedded digits with the real trainer (`imgclf.training.fit`);
IMGCLF_TEST_SERVING_MODEL=/path/to/model reuses an artifact you trained before (e.g. with `imgclf train`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.served import Served
from support.training import FAST_HYPERPARAMETERS

# The trainer settings that fit the digits sample fast (random init, 32 px); 3 epochs reach ~85-98 %.
TRAIN_SETTINGS = FAST_HYPERPARAMETERS


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
def serve(tmp_path):
    """Factory: serve(model_dir, *args, env=...) -> started Served; all are cleaned up after the test."""
    started: list[Served] = []

    def _serve(model_dir, *args, env=None) -> Served:
        s = Served(model_dir, tmp_path / f"serve-{len(started)}.log", *args, env=env).start()
        started.append(s)
        return s

    yield _serve
    for s in started:
        s.cleanup()


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    """One healthy single-model server (1 worker, no micro-batching) shared by a module's tests."""
    s = Served(trained_model, tmp_path_factory.mktemp("serve") / "serve.log").start()
    s.wait_healthy()
    yield s
    s.cleanup()
