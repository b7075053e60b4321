"""The tuning space comes from the hyperparameter spec, for Optuna and for SageMaker alike."""

from __future__ import annotations

import optuna
import pytest

from imgclf import tuning
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
