"""imgclf.sagemaker.jobs: the plain data every job is built from (no SDK)."""

from __future__ import annotations

import pytest

from imgclf.diagnostics import DEBUGGER_RULES, PROFILER_RULES
from imgclf.errors import UserError
from imgclf.hyperparameters import Hyperparameters
from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVES
from imgclf.sagemaker import jobs

pytestmark = pytest.mark.unit


def test_job_hyperparameters_are_validated_strings_of_only_the_given_values():
    hps = jobs.job_hyperparameters({"batch_size": 128, "train-backbone": True, "learning-rate": "0.01"})
    assert hps == {"lr": "0.01", "batch-size": "128", "train-backbone": "true"}
    # What the container gets back parses to the same typed values.
    assert Hyperparameters.from_mapping(hps).batch_size == 128
    assert jobs.job_hyperparameters() == {}
    with pytest.raises(UserError, match="Unknown hyperparameter"):
        jobs.job_hyperparameters({"momentum": 0.9})
    with pytest.raises(UserError, match="batch-size"):
        jobs.job_hyperparameters({"batch-size": "big"})


def test_objective_directions_and_unknown_objective():
    assert jobs.objective("valid_accuracy") == ("valid_accuracy", "Maximize")
    assert jobs.objective("valid_loss") == ("valid_loss", "Minimize")
    assert {d["Name"] for d in METRIC_DEFINITIONS} >= set(OBJECTIVES)
    with pytest.raises(UserError, match="valid_accuracy"):
        jobs.objective("test_accuracy")


def test_metric_definitions_are_a_copy_of_the_trainers():
    got = jobs.metric_definitions()
    assert got == METRIC_DEFINITIONS
    got[0]["Name"] = "changed"
    assert METRIC_DEFINITIONS[0]["Name"] != "changed"


def test_debugger_collections_follow_the_debug_hyperparameters():
    assert jobs.debugger_collections() == {"losses": {"train.save_interval": "100", "eval.save_interval": "10"}}
    got = jobs.debugger_collections({"debug-collections": "losses,weights", "debug-train-interval": "5"})
    assert set(got) == {"losses", "weights"} and got["weights"]["train.save_interval"] == "5"


def test_seed_rules_and_profiler_interval():
    assert DEBUGGER_RULES == (
        "loss_not_decreasing",
        "vanishing_gradient",
        "overfit",
        "overtraining",
        "poor_weight_initialization",
    )
    assert PROFILER_RULES == ("LowGPUUtilization", "ProfilerReport")
    assert jobs.PROFILER_INTERVAL_MS == 500


def test_channels_from_a_data_folder_s3_prefix_or_explicit_channels(tmp_path):
    for name in ("train", "valid"):
        (tmp_path / name / "a").mkdir(parents=True)
    assert jobs.channels(str(tmp_path)) == {"train": str(tmp_path / "train"), "valid": str(tmp_path / "valid")}
    assert jobs.channels("s3://b/p/") == {
        "train": "s3://b/p/train/",
        "valid": "s3://b/p/valid/",
        "test": "s3://b/p/test/",
    }
    assert jobs.channels(None, train="s3://b/t/") == {"train": "s3://b/t/"}
    with pytest.raises(UserError, match="no train/"):
        jobs.channels(str(tmp_path / "train"))
    with pytest.raises(UserError, match="No training data"):
        jobs.channels(None)
    with pytest.raises(UserError, match="not a directory"):
        jobs.channels(None, train=str(tmp_path / "missing"))


def test_each_job_name_is_unique_and_its_checkpoint_prefix_is_its_own():
    names = {jobs.unique_job_name("imgclf") for _ in range(50)}
    assert len(names) == 50
    long = jobs.unique_job_name("x" * 100)
    assert len(long) <= 63 and long.startswith("x")
    name = next(iter(names))
    assert jobs.checkpoint_uri("b", "p", name) == f"s3://b/p/checkpoints/{name}"


CHANS = {"train": "s3://b/d/train/", "valid": "s3://b/d/valid/", "test": "s3://b/d/test/"}


def test_sharded_distribution_splits_only_the_train_channel_across_hosts():
    got = jobs.channel_distributions(CHANS, input_mode="FastFile", distribution="sharded", local=False)
    assert got == {"train": "ShardedByS3Key", "valid": "FullyReplicated", "test": "FullyReplicated"}
    got = jobs.channel_distributions(CHANS, input_mode="File", distribution="replicated", local=False)
    assert set(got.values()) == {"FullyReplicated"}


@pytest.mark.parametrize(
    ("chans", "mode", "distribution", "local", "reason"),
    [
        (CHANS, "Pipe", "replicated", False, "Pipe is not supported.*FastFile"),
        (CHANS, "Fast", "replicated", False, "input-mode must be one of"),
        (CHANS, "File", "byhost", False, "distribution must be one of"),
        (CHANS, "File", "sharded", True, "does not exist in SageMaker local mode"),
        ({"train": "s3://b/t/"}, "File", "sharded", False, "needs a valid channel"),
    ],
)
def test_input_options_the_trainer_or_local_mode_cannot_honour_are_refused_before_any_call(
    chans, mode, distribution, local, reason
):
    with pytest.raises(UserError, match=reason):
        jobs.channel_distributions(chans, input_mode=mode, distribution=distribution, local=local)
