"""The train channel across hosts and input modes, on fake /opt/ml trees with sagemaker-training's real `train`.

FullyReplicated (every host has the whole channel): the trainer splits it by global rank, so in every epoch the two
hosts draw disjoint shares that cover it. ShardedByS3Key (SageMaker gave each host its own objects): each host
splits only its own share among its own ranks, the class list is the union of the hosts', and hosts with shares of
different sizes still take as many steps. Pipe: refused with the cause in output/failure.

Each rank logs per epoch how many train samples it draws and `sample_set_digest` of them; digests of disjoint
sets add up (mod 2**64) to the digest of their union. Tar shards (`imgclf shard`) under FullyReplicated: split by
global rank too, whole shards to each rank, so the hosts' shares are again disjoint and cover the channel.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from support.ports import free_port
from support.training import FAST_HYPERPARAMETERS, drawn_shares, make_opt_ml, sagemaker_train, shard_keys

from imgclf.cli import main
from imgclf.training.loaders import sample_set_digest

pytestmark = pytest.mark.integration

HOSTS = ["algo-1", "algo-2"]
HYPERPARAMETERS = {**FAST_HYPERPARAMETERS, "epochs": "2"}


def _slice(src: Path, dst: Path, per_class: int, keep=lambda i: True, classes=None) -> Path:
    """`per_class` images of each class of an ImageFolder channel, those whose index passes `keep`."""
    for class_dir in sorted(src.iterdir()):
        if classes is not None and class_dir.name not in classes:
            continue
        (dst / class_dir.name).mkdir(parents=True)
        for i, f in enumerate(sorted(class_dir.iterdir())[:per_class]):
            if keep(i):
                shutil.copy(f, dst / class_dir.name / f.name)
    return dst


def _keys(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _two_hosts(
    tmp_path: Path, trains: list[Path], valid: Path, input_config: dict, hyperparameters: dict = HYPERPARAMETERS
) -> list[str]:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    procs = []
    for host, train in zip(HOSTS, trains, strict=True):
        base = make_opt_ml(
            tmp_path / host,
            {"train": train, "valid": valid},
            hyperparameters,
            hosts=HOSTS,
            current_host=host,
            input_config=input_config,
        )
        procs.append(sagemaker_train(base, env))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    return outs


def _shares(outs: list[str]) -> dict[tuple[int, str], tuple[int, int]]:
    """(epoch, host) -> (samples drawn, digest as an int), from both hosts' logs."""
    found = drawn_shares("\n".join(outs))
    assert {host for _, host in found} == set(HOSTS), outs[0][-2000:]
    return found


def test_fully_replicated_hosts_draw_disjoint_shares_that_cover_the_channel_every_epoch(sample_data, tmp_path):
    train = _slice(sample_data / "train", tmp_path / "train", per_class=10)
    valid = _slice(sample_data / "valid", tmp_path / "valid", per_class=5)
    outs = _two_hosts(tmp_path, [train, train], valid, {})
    keys = _keys(train)
    shares = _shares(outs)
    for epoch in (1, 2):
        (n1, d1), (n2, d2) = shares[(epoch, "algo-1")], shares[(epoch, "algo-2")]
        assert n1 == n2 == len(keys) // 2
        # Disjoint and covering: the two digests add up to the whole channel's (a shared sample would count twice).
        assert (d1 + d2) % 2**64 == int(sample_set_digest(keys), 16), epoch
    assert "split by global rank" in outs[0]


# What a rank reading shards logs once (imgclf.training.loaders._stream_loader).
STREAM_LINE = re.compile(
    r"host (algo-\d+) rank \d+ reads (\d+) sample\(s\) from its shards per epoch and trains on (\d+) batch\(es\) "
    r"of up to (\d+)"
)


def test_fully_replicated_hosts_stream_disjoint_shards_that_cover_the_channel_every_epoch(sample_data, tmp_path):
    folder = tmp_path / "folder"
    _slice(sample_data / "train", folder / "train", per_class=10)
    _slice(sample_data / "valid", folder / "valid", per_class=5)
    sharded = tmp_path / "shards"
    # 10 shards of 10: five whole shards for each host's single process.
    assert main(["shard", "--data", str(folder), "--out", str(sharded), "--shard-size", "10"]) == 0
    # One DataLoader worker per host: the stream runs there, and the share is still logged by the training process.
    hyperparameters = {**HYPERPARAMETERS, "batch-size": "16", "num-workers": "1"}
    outs = _two_hosts(tmp_path, [sharded / "train", sharded / "train"], sharded / "valid", {}, hyperparameters)
    keys = shard_keys(sharded / "train")
    assert len(keys) == 100
    shares = _shares(outs)
    for epoch in (1, 2):
        (n1, d1), (n2, d2) = shares[(epoch, "algo-1")], shares[(epoch, "algo-2")]
        assert n1 + n2 == len(keys), epoch
        assert (d1 + d2) % 2**64 == int(sample_set_digest(keys), 16), epoch
    # Each host streams all of its share every epoch, and trains on as many full batches as the other host: with
    # one reader per host, drop_last leaves out less than one batch of each host's share.
    streams = {host: tuple(map(int, rest)) for host, *rest in STREAM_LINE.findall("\n".join(outs))}
    assert set(streams) == set(HOSTS), outs[0][-2000:]
    (read1, steps1, batch), (read2, steps2, _) = streams["algo-1"], streams["algo-2"]
    assert (read1, read2) == (shares[(1, "algo-1")][0], shares[(1, "algo-2")][0])
    assert steps1 == steps2 > 0 and batch == 16
    for read in (read1, read2):
        assert steps1 * batch <= read < (steps1 + 1) * batch
    assert (tmp_path / "algo-1" / "model" / "model.pt").is_file()


def test_sharded_by_s3_key_hosts_read_all_of_their_own_share_and_agree_on_classes(sample_data, tmp_path):
    # Unequal shares, and algo-2 has no image of class 9: what ShardedByS3Key may hand out.
    big = _slice(sample_data / "train", tmp_path / "share-1", per_class=12, keep=lambda i: i % 3 != 0)
    digits = [str(d) for d in range(9)]
    small = _slice(sample_data / "train", tmp_path / "share-2", per_class=12, keep=lambda i: i % 3 == 0, classes=digits)
    valid = _slice(sample_data / "valid", tmp_path / "valid", per_class=5)
    outs = _two_hosts(tmp_path, [big, small], valid, {"train": {"S3DistributionType": "ShardedByS3Key"}})
    shares = _shares(outs)
    for epoch in (1, 2):
        (n1, d1), (n2, _) = shares[(epoch, "algo-1")], shares[(epoch, "algo-2")]
        # One process per host: algo-1 draws every sample of its own share and nothing else...
        assert n1 == len(_keys(big)) and d1 == int(sample_set_digest(_keys(big)), 16)
        # ...and algo-2, with the smaller share, takes as many steps (repeating some of its samples).
        assert n2 == n1 > len(_keys(small))
    assert "the channel is sharded by host" in outs[1]
    names = json.loads((tmp_path / "algo-1" / "model" / "index_to_name.json").read_text())
    assert sorted(names.values()) == [str(d) for d in range(10)]


def test_pipe_input_mode_fails_at_start_with_the_cause_in_the_failure_file(sample_data, tmp_path):
    base = make_opt_ml(
        tmp_path / "ml",
        {"train": _slice(sample_data / "train", tmp_path / "train", per_class=2)},
        HYPERPARAMETERS,
        input_config={"train": {"TrainingInputMode": "Pipe"}},
    )
    proc = sagemaker_train(base)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert "Pipe" in failure and "FastFile" in failure, failure
