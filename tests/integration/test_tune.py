"""`imgclf tune` on the embedded sample: real trainer runs, frozen random backbone at 32 px, cached features."""

from __future__ import annotations

import csv
import json
import subprocess

import optuna
import pytest
from support import VENV_BIN

from imgclf import tuning
from imgclf.channels import resolve_channels
from imgclf.hyperparameters import Hyperparameters

pytestmark = pytest.mark.integration

FIXED = ["--pretrained-weights", "none", "--no-augment", "--image-size", "32"]


def _tune(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "imgclf"), "tune", *args, *FIXED], capture_output=True, text=True, timeout=timeout
    )


def test_tune_writes_sagemaker_hyperparameters_resumes_and_retrains_the_best(sample_data, tmp_path):
    out = tmp_path / "tune"
    first = _tune(
        "--data", str(sample_data), "--trials", "3", "--jobs", "2", "--out", str(out), "--tune", "lr", "--epochs", "3"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "defaults (trial 0)" in first.stdout and "best trial" in first.stdout
    hps = json.loads((out / "hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hps.values())
    parsed = Hyperparameters.from_mapping(hps)  # what the container will read
    assert parsed.image_size == 32 and parsed.pretrained_weights == "none" and 0.001 <= parsed.lr <= 0.1
    assert parsed.epochs == 3  # a fixed value passes through to the SageMaker hyperparameters
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["lr"] == "0.001"  # trial 0 is the spec defaults
    best = max(float(r["valid_accuracy"]) for r in rows if r["state"] == "COMPLETE")
    assert best >= float(rows[0]["valid_accuracy"])

    again = _tune("--data", str(sample_data), "--trials", "4", "--out", str(out), "--tune", "lr", "--epochs", "3",
                  "--retrain-best")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 trial(s) done, 1 to run" in again.stdout
    with open(out / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (out / "model" / "model.pt").is_file() and "Final model" in again.stdout


def test_trials_share_cached_features_and_pruning_stops_a_trial_after_its_first_epoch(sample_data, tmp_path):
    params = [p for p in tuning.tunable() if p.name in ("lr", "batch-size")]
    fixed = {"pretrained-weights": "none", "augment": False, "image-size": 32, "epochs": 3}
    tuner = tuning.LocalTuner(
        channels=resolve_channels(sample_data),
        out=tmp_path,
        params=params,
        fixed=fixed,
        storage=None,
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),  # accuracy can never reach it: prune at epoch 1
    )
    study = tuner.optimize(3)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.PRUNED] * 3
    assert all(len(t.intermediate_values) == 1 for t in study.trials)
    # one backbone pass per split for all trials, whatever their batch size
    assert len(tuner.feature_cache) == 2
    assert len({t.params["batch-size"] for t in study.trials}) >= 1
