import math

import pytest
import torch

from imgclf.training.early_stopping import BestSoFar

pytestmark = pytest.mark.unit


def _report(accuracy: float) -> dict:
    return {"accuracy": accuracy}


def test_an_improvement_keeps_the_epoch_its_weights_and_resets_the_count():
    model = torch.nn.Linear(2, 2)
    best = BestSoFar()
    best.update(1, 0.9, _report(0.5), model)
    best.update(2, 1.0, _report(0.6), model)
    assert (best.epoch, best.valid_loss, best.valid_accuracy, best.bad_epochs) == (1, 0.9, 0.5, 1)
    with torch.no_grad():
        model.weight.add_(1.0)
    best.update(3, 0.8, _report(0.7), model)
    assert (best.epoch, best.bad_epochs) == (3, 0)
    assert torch.equal(best.state["weight"], model.weight)
    assert best.state["weight"] is not model.weight  # a copy, not the live tensor


def test_patience_stops_after_that_many_epochs_without_improvement_and_zero_never_stops():
    best = BestSoFar(valid_loss=0.5, epoch=1, bad_epochs=2)
    assert best.stopped(2) and not best.stopped(3) and not best.stopped(0)


def test_checkpoint_dict_round_trips_and_old_checkpoints_still_load():
    best = BestSoFar(valid_loss=0.4, epoch=2, bad_epochs=1, valid_accuracy=0.8, valid_report=_report(0.8), state={})
    assert BestSoFar.from_checkpoint(best.to_checkpoint()) == best
    old = {"valid_loss": math.inf, "epoch": 0, "state": None, "bad_epochs": 0}  # before any improvement
    assert BestSoFar.from_checkpoint(old) == BestSoFar()
