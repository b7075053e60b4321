"""inputdataconfig.json as the trainer reads it: input modes, ShardedByS3Key, and how the train data is split."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imgclf.errors import UserError
from imgclf.hyperparameters import Hyperparameters
from imgclf.training.distributed import Layout
from imgclf.training.input_data import ChannelInput, channel_inputs
from imgclf.training.loaders import load_datasets
from imgclf.training.setup import RunConfig

pytestmark = pytest.mark.unit


def test_channel_inputs_read_mode_and_distribution_under_canonical_names():
    config = {
        "training": {"TrainingInputMode": "FastFile", "S3DistributionType": "ShardedByS3Key"},
        "validation": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"},
        "test": {},  # what fill_local_defaults and local mode may write: File, replicated
    }
    assert channel_inputs(config) == {
        "train": ChannelInput("FastFile", host_sharded=True),
        "valid": ChannelInput("File", host_sharded=False),
        "test": ChannelInput("File", host_sharded=False),
    }


def test_a_pipe_channel_is_refused_naming_fastfile():
    with pytest.raises(UserError, match="'train' uses Pipe input mode.*FastFile"):
        channel_inputs({"train": {"TrainingInputMode": "Pipe"}})


def test_train_data_is_split_by_global_rank_unless_the_host_already_holds_only_its_share():
    # Two hosts with two processes each; algo-2's second process is global rank 3.
    layout = Layout(hosts=("algo-1", "algo-2"), current_host="algo-2", procs_per_host=2, local_rank=1)
    assert layout.data_split(host_sharded=False) == (4, 3)
    assert layout.data_split(host_sharded=True) == (2, 1)


def _tiny_folder(root: Path) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / c / f"{i}.png")
    return root


def test_a_train_channel_sharded_by_host_needs_a_valid_channel(tmp_path):
    cfg = RunConfig(train_dir=_tiny_folder(tmp_path / "train"), model_dir=tmp_path / "m", train_host_sharded=True)
    with pytest.raises(UserError, match="ShardedByS3Key.*no valid channel"):
        load_datasets(Hyperparameters.from_mapping({}), cfg)


def test_a_manifest_train_channel_cannot_be_sharded_by_host(tmp_path):
    train = _tiny_folder(tmp_path / "train")
    (train / "labels.csv").write_text("path,label\na/0.png,a\nb/0.png,b\n")
    cfg = RunConfig(
        train_dir=train, valid_dir=_tiny_folder(tmp_path / "valid"), model_dir=tmp_path / "m", train_host_sharded=True
    )
    with pytest.raises(UserError, match="manifest layout.*FullyReplicated"):
        load_datasets(Hyperparameters.from_mapping({}), cfg)
