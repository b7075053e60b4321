"""The container side of the training contract outside SageMaker: the config files it fills in, and which
framework module the toolkit is told to run (the embedded sample only when the tree holds no data at all)."""

from __future__ import annotations

import json

import pytest

from imgclf.training import contract

pytestmark = pytest.mark.unit


def test_an_empty_tree_gets_single_host_defaults_and_counts_as_no_data(tmp_path):
    assert contract.fill_local_defaults(tmp_path) is True
    config = tmp_path / "input" / "config"
    assert json.loads((config / "resourceconfig.json").read_text()) == {"current_host": "algo-1", "hosts": ["algo-1"]}
    assert json.loads((config / "inputdataconfig.json").read_text()) == {}
    assert json.loads((config / "hyperparameters.json").read_text()) == {}


def test_channel_folders_are_declared_and_existing_config_is_kept(tmp_path):
    (tmp_path / "input" / "data" / "train").mkdir(parents=True)
    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text('{"epochs": "2"}')
    assert contract.fill_local_defaults(tmp_path) is False
    config = tmp_path / "input" / "config"
    assert json.loads((config / "inputdataconfig.json").read_text()) == {"train": {"TrainingInputMode": "File"}}
    assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "2"}


def test_a_declared_channel_config_without_folders_is_not_a_tree_without_data(tmp_path):
    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "inputdataconfig.json").write_text('{"valid": {}}')
    assert contract.fill_local_defaults(tmp_path) is False


@pytest.mark.parametrize(
    "no_data, configured, expected",
    [
        (False, None, contract.FRAMEWORK_MODULE),
        (False, contract.FRAMEWORK_MODULE, contract.FRAMEWORK_MODULE),
        (True, None, contract.SAMPLE_FRAMEWORK_MODULE),
        (True, contract.FRAMEWORK_MODULE, contract.SAMPLE_FRAMEWORK_MODULE),
        (True, "their.module:main", "their.module:main"),
    ],
)
def test_the_sample_entry_point_is_named_only_for_a_tree_without_data(no_data, configured, expected):
    assert contract.framework_module(no_data, configured) == expected


def test_every_named_entry_point_exists():
    for spec in (contract.FRAMEWORK_MODULE, contract.SAMPLE_FRAMEWORK_MODULE):
        module, name = spec.split(":")
        assert module == contract.__name__ and callable(getattr(contract, name))
