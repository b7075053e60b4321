"""Two hosts in SageMaker local mode (instance_count=2: containers algo-1 and algo-2) on one ImageFolder channel.

Local mode has FullyReplicated only: its _LocalTrainingJob refuses any other S3DataDistributionType and it writes
TrainingInputMode "File" into every container's inputdataconfig.json whatever the job asked (sagemaker 2.257,
sagemaker/local/entities.py and image.py). So this checks the replicated case for real, where the trainer splits
the channel by global rank; ShardedByS3Key (split only among a host's own ranks) is checked on fake /opt/ml trees
in tests/integration/test_multi_host_data.py, and the request the SDK sends for it below.
"""

from __future__ import annotations

import re

import pytest
from support.localmode import CONTAINER_HYPERPARAMETERS
from support.training import drawn_shares

from imgclf.training.loaders import sample_set_digest

pytestmark = pytest.mark.localmode

# Two epochs: the split is drawn again each epoch (DistributedSampler.set_epoch), disjoint every time.
HYPERPARAMETERS = {**CONTAINER_HYPERPARAMETERS, "epochs": "2"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_two_hosts_draw_disjoint_shares_covering_the_channel_every_epoch(localmode, train_image, small_sample):
    channels = {name: str(small_sample / name) for name in ("train", "valid")}
    result, output, seconds = localmode.driver(
        "v2_fit",
        sdk=2,
        args={
            "workdir": str(localmode.workdir / "sagemaker-local"),
            "image": train_image,
            "hyperparameters": HYPERPARAMETERS,
            "instance_count": 2,
            "channels": channels,
        },
    )
    print(f"two-host fit: {seconds:.1f} s")
    keys = sorted(str(p.relative_to(small_sample / "train")) for p in (small_sample / "train").rglob("*.png"))
    shares = drawn_shares(ANSI.sub("", output))
    for epoch in (1, 2):
        (n1, d1), (n2, d2) = shares[(epoch, "algo-1")], shares[(epoch, "algo-2")]
        assert n1 == n2 == len(keys) // 2
        # A sample both hosts drew would count twice: the digests add up to the channel's only when disjoint.
        assert (d1 + d2) % 2**64 == int(sample_set_digest(keys), 16), f"epoch {epoch}: the shares overlap"
    assert result["model_data"].endswith("model.tar.gz")


def test_fastfile_and_sharded_train_channel_reach_the_training_job_request(localmode):
    result, _, _ = localmode.driver(
        "v2_inputs_request",
        sdk=2,
        args={
            "role": "arn:aws:iam::111111111111:role/imgclf",
            "image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/imgclf-train:1",
            "channels": {"train": "s3://b/d/train/", "valid": "s3://b/d/valid/"},
            "input_mode": "FastFile",
            "distribution": "sharded",
        },
    )
    got = {c["ChannelName"]: c for c in result["input_config"]}
    assert {name: c["InputMode"] for name, c in got.items()} == {"train": "FastFile", "valid": "FastFile"}
    kinds = {name: c["DataSource"]["S3DataSource"]["S3DataDistributionType"] for name, c in got.items()}
    assert kinds == {"train": "ShardedByS3Key", "valid": "FullyReplicated"}
