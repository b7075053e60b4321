import re
from pathlib import Path

import pytest

from imgclf import hyperparameters as hp
from imgclf.errors import UserError
from imgclf.hyperparameters import SPEC, Hyperparameters, defaults, markdown_table

pytestmark = pytest.mark.unit


def test_sagemaker_json_strings_are_parsed_to_the_spec_types():
    hp = Hyperparameters.from_mapping(
        {"lr": "0.01", "batch-size": '"128"', "epochs": "4", "train-backbone": "true", "image-size": "64"}
    )
    assert hp.lr == 0.01 and hp.batch_size == 128 and hp.epochs == 4
    assert hp.train_backbone is True and hp.image_size == 64


def test_seed_spellings_are_accepted():
    hp = Hyperparameters.from_mapping({"batch_size": 16, "learning_rate": "0.05", "epochs": 2.0})
    assert (hp.batch_size, hp.lr, hp.epochs) == (16, 0.05, 2)


def test_sagemaker_internal_hyperparameters_are_ignored():
    hp = Hyperparameters.from_mapping({"sagemaker_job_name": '"x"', "_tuning_objective_metric": "valid_accuracy"})
    assert hp == defaults()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lr": "fast"}, "'lr' must be a float"),
        ({"epochs": "2.5"}, "'epochs' must be a int"),
        ({"train-backbone": "maybe"}, "'train-backbone' must be a bool"),
        ({"arch": "vgg12"}, "must be one of resnet18"),
        ({"batchsize": "3"}, "Unknown hyperparameter(s): batchsize"),
        ({"lr": "-1"}, "lr must be > 0"),
        ({"batch_size": "8", "batch-size": "16"}, "given twice"),
    ],
)
def test_bad_values_raise_a_user_error_naming_the_problem(raw, message):
    with pytest.raises(UserError) as err:
        Hyperparameters.from_mapping(raw)
    assert message in str(err.value)


def test_round_trip_through_the_sagemaker_string_form():
    hp = defaults().replace(lr=0.02, train_backbone=True)
    assert Hyperparameters.from_mapping(hp.to_sagemaker()) == hp
    assert all(isinstance(v, str) for v in hp.to_sagemaker().values())


def test_tuning_ranges_are_the_seeds_ranges():
    by = {p.name: p.tuning for p in SPEC if p.tuning is not None}
    assert (by["lr"].low, by["lr"].high) == (0.001, 0.1)
    assert by["batch-size"].values == (8, 16, 32, 64, 128, 256, 512)
    assert (by["epochs"].low, by["epochs"].high) == (2, 10)


def test_readme_hyperparameter_table_matches_the_spec():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = re.search(r"<!-- hyperparameters:begin -->\n(.*?)\n<!-- hyperparameters:end -->", readme, re.S)
    assert table, "README.md lacks the hyperparameter table markers"
    assert table.group(1).strip() == markdown_table().strip(), (
        "regenerate: python -c 'from imgclf.hyperparameters import markdown_table as t; print(t())'"
    )


def test_augment_is_auto_by_default_and_takes_true_false_or_auto():
    assert defaults().augment == "auto"
    for given, typed in (("true", True), ("false", False), ("AUTO", "auto"), ('"auto"', "auto"), (False, False)):
        hp = Hyperparameters.from_mapping({"augment": given})
        assert hp.augment == typed
        assert Hyperparameters.from_mapping(hp.to_sagemaker()) == hp
    with pytest.raises(UserError, match="train-backbone"):
        Hyperparameters.from_mapping({"train-backbone": "auto"})  # only a bool whose default is auto takes it


def test_one_range_mapping_for_both_tuners_linear_continuous_is_linear(monkeypatch):
    """tuning_ranges() is the only spec -> range mapping: SageMaker's tuner, the local tuner and README read it."""
    ranges = hp.tuning_ranges()
    assert set(ranges) == {p.name for p in hp.SPEC if p.tuning is not None} == {"lr", "batch-size", "epochs"}
    assert ranges["lr"] == {"type": "Continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"}
    assert ranges["epochs"] == {"type": "Integer", "min": 2, "max": 10, "scaling": "Linear"}
    assert ranges["batch-size"]["values"] == ["8", "16", "32", "64", "128", "256", "512"]
    linear = hp.Param("momentum", float, 0.9, "test only", tuning=hp.Continuous(0.5, 0.99))
    monkeypatch.setattr(hp, "SPEC", (*hp.SPEC, linear))
    assert hp.tuning_ranges()["momentum"]["scaling"] == "Linear"
