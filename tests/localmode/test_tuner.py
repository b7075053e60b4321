"""Smoke test 6: the HyperparameterTuner imgclf.sagemaker builds, checked as the request SDK v2 would send.

Local mode cannot run tuning jobs, so the tuner is built for SageMaker (dummy role/bucket, no AWS call) and its
CreateHyperParameterTuningJob / CreateTrainingJob requests are checked against the one spec and against a real
metric lines from a native fast `imgclf train` (the same space runs locally with `imgclf tune`).
"""

from __future__ import annotations

import re

import pytest
from support.localmode import LOCAL_HYPERPARAMETERS

from imgclf.hyperparameters import SPEC, Categorical, Continuous, Hyperparameters, Integer
from imgclf.metrics import METRIC_DEFINITIONS
from imgclf.sagemaker.jobs import PROFILER_INTERVAL_MS

pytestmark = pytest.mark.localmode

ROLE = "arn:aws:iam::123456789012:role/imgclf-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf-train:v1"


@pytest.fixture(scope="module")
def real_metric_lines(trained_model) -> list[str]:
    """What the trainer really prints: the native fast run (shared with the serving tests) logs one epoch line
    per epoch and one test line."""
    lines = [line for line in trained_model["log"].splitlines() if re.match(r"^(epoch|test_loss)=", line)]
    assert len(lines) == int(LOCAL_HYPERPARAMETERS["epochs"]) + 1, trained_model["log"][-3000:]
    return [lines[0], lines[-1]]


def _values(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-+0-9.eE]+)", line)}


def test_tuner_request_has_spec_ranges_objective_and_metric_regexes_that_read_real_trainer_lines(
    localmode, sample_data, real_metric_lines
):
    hps = {"train-backbone": "true", "pretrained-weights": "none", "image-size": "64"}
    result, _, seconds = localmode.driver(
        "tuner", sdk=2, args={"role": ROLE, "bucket": "imgclf-test-bucket", "image": IMAGE, "hyperparameters": hps}
    )
    print(f"tuner driver: {seconds:.1f} s")
    for objective, direction in (("valid_accuracy", "Maximize"), ("valid_loss", "Minimize")):
        req = result[objective]
        cfg = req["tuning_config"] if "tuning_config" in req else req
        assert cfg["objective_metric_name"] == objective
        assert cfg["objective_type"] == direction
        assert cfg["strategy"] == "Bayesian"
        assert (cfg["max_jobs"], cfg["max_parallel_jobs"]) == (6, 2)
        ranges = cfg["parameter_ranges"]
        # Exactly the spec's tuning ranges, by the names the trainer reads.
        by_name = {r["Name"]: r for kind in ranges.values() for r in kind}
        tuned = {p.name: p.tuning for p in SPEC if p.tuning is not None}
        assert set(by_name) == set(tuned)
        for name, t in tuned.items():
            r = by_name[name]
            if isinstance(t, Continuous):
                assert r in ranges["ContinuousParameterRanges"]
                assert (float(r["MinValue"]), float(r["MaxValue"])) == (t.low, t.high)
                assert r["ScalingType"] == ("Logarithmic" if t.log else "Linear")
            elif isinstance(t, Integer):
                assert r in ranges["IntegerParameterRanges"]
                assert (int(r["MinValue"]), int(r["MaxValue"])) == (t.low, t.high)
            elif isinstance(t, Categorical):
                assert r in ranges["CategoricalParameterRanges"]
                assert r["Values"] == [str(v) for v in t.values]
        # Every value the tuner can pick parses with the trainer's own spec.
        for r in ranges["CategoricalParameterRanges"]:
            for v in r["Values"]:
                Hyperparameters.from_mapping({r["Name"]: v})

        job = req["training_config"]
        assert job["image_uri"] == IMAGE
        assert job["metric_definitions"] == METRIC_DEFINITIONS
        assert job["use_spot_instances"] is True
        # A tuner's trials run side by side: no shared default checkpoint prefix for them to overwrite.
        assert not job.get("checkpoint_s3_uri"), job.get("checkpoint_s3_uri")
        # Static hyperparameters: strings, minus the tuned ones, and readable by the trainer.
        static = {k: v for k, v in job["static_hyperparameters"].items() if not k.startswith(("_", "sagemaker_"))}
        assert static == hps
        assert all(isinstance(v, str) for v in static.values())
        Hyperparameters.from_mapping(job["static_hyperparameters"])

    # The regexes SageMaker runs over the logs pull the right numbers out of the trainer's real lines.
    epoch_line, test_line = real_metric_lines
    printed = {**_values(epoch_line), **_values(test_line)}
    found = {}
    for d in result["valid_accuracy"]["training_config"]["metric_definitions"]:
        for line in real_metric_lines:
            m = re.search(d["Regex"], line)
            if m:
                found[d["Name"]] = float(m.group(1))
    # Every definition matches a real line and reads exactly the printed number (extra keys such as
    # epoch_seconds are console-only).
    assert set(found) == {d["Name"] for d in METRIC_DEFINITIONS}, (found, real_metric_lines)
    assert found == {name: printed[name] for name in found}, (found, real_metric_lines)
    assert 0.0 <= found["valid_accuracy"] <= 1.0 and found["valid_loss"] > 0

    # The training job imgclf.sagemaker builds on SageMaker: the seeds' Debugger rules, ProfilerReport, 500 ms.
    train = result["training"]
    rules = [r["RuleConfigurationName"] for r in train["debugger_rule_configs"]]
    assert rules == ["LossNotDecreasing", "VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"]
    assert [r["RuleConfigurationName"] for r in train["profiler_rule_configs"]] == [
        "LowGPUUtilization",
        "ProfilerReport",
    ]
    assert train["profiler_config"]["ProfilingIntervalInMilliseconds"] == PROFILER_INTERVAL_MS
    collections = train["debugger_hook_config"]["CollectionConfigurations"]
    names = [c["CollectionName"] for c in collections]
    assert len(names) == len(set(names)), f"duplicate collections {names}"
    losses = next(c for c in collections if c["CollectionName"] == "losses")
    assert losses["CollectionParameters"] == {"train.save_interval": "100", "eval.save_interval": "10"}
    assert train["hyperparameters"] == hps
    assert train["metric_definitions"] == METRIC_DEFINITIONS

    # Issue 12: a second spot job in the same bucket does not pick up the first job's checkpoints: each job syncs
    # s3://BUCKET/PREFIX/checkpoints/<its own job name>.
    second = result["second_training"]
    uris = [t["checkpoint_s3_uri"] for t in (train, second)]
    assert uris[0] != uris[1], uris
    for t, uri in zip((train, second), uris, strict=True):
        assert uri == f"s3://imgclf-test-bucket/imgclf/checkpoints/{t['job_name']}", (uri, t["job_name"])
