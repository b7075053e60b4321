"""The tuning space comes from the hyperparameter spec, for Optuna and for SageMaker alike."""

from __future__ import annotations

import optuna
import pytest

from imgclf import cli, tuning
from imgclf.hyperparameters import Categorical

pytestmark = pytest.mark.unit


def test_optuna_suggestions_stay_inside_the_spec_ranges():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        values = tuning.suggest(trial, tuning.tunable())
        study.tell(trial, 0.0)
        for p in tuning.tunable():
            v = values[p.name]
            if isinstance(p.tuning, Categorical):
                assert v in p.tuning.values
            else:
                assert p.tuning.low <= v <= p.tuning.high and isinstance(v, p.type)


def test_a_hyperparameter_cannot_be_both_fixed_and_tuned(sample_data, tmp_path, capsys):
    rc = cli.main(["tune", "--data", str(sample_data), "--trials", "1", "--out", str(tmp_path), "--lr", "0.01"])
    assert rc == 2 and "both fixed" in capsys.readouterr().err


def test_tuning_a_parameter_without_a_range_is_refused(sample_data, tmp_path, capsys):
    rc = cli.main(["tune", "--data", str(sample_data), "--trials", "1", "--out", str(tmp_path), "--tune", "image-size"])
    assert rc == 2 and "no tuning range" in capsys.readouterr().err


def test_data_without_a_train_directory_is_refused(tmp_path, capsys):
    rc = cli.main(["tune", "--data", str(tmp_path), "--trials", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "train/" in capsys.readouterr().err
