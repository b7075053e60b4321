"""inputdataconfig.json: how SageMaker delivers each channel, read from sagemaker-training's `input_data_config`.

    {"train": {"TrainingInputMode": "FastFile", "S3DistributionType": "ShardedByS3Key", ...}, "valid": {...}}

TrainingInputMode   File: the channel was copied to input/data/<channel> before the job started.
                    FastFile: the same path, but each file is fetched from S3 when it is first read; the readers then
                    skip their up-front decode check (it would read the whole dataset once before training).
                    Pipe: a FIFO (input/data/<channel>_<epoch>) no channel format here can read: refused.
S3DistributionType  FullyReplicated: every host has the whole channel; ShardedByS3Key: each host has its own 1/N
                    of the objects, so the train data is split only among this host's processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imgclf.channels import CHANNEL_ALIASES
from imgclf.errors import UserError


@dataclass(frozen=True)
class ChannelInput:
    mode: str = "File"
    host_sharded: bool = False


def channel_inputs(config: Mapping[str, Mapping[str, Any]]) -> dict[str, ChannelInput]:
    """Canonical channel name (train/valid/test) -> how it is delivered; a Pipe channel is a UserError."""
    out = {}
    for name, entry in config.items():
        mode = str(entry.get("TrainingInputMode", "File"))
        if mode == "Pipe":
            raise UserError(
                f"Channel {name!r} uses Pipe input mode, which imgclf cannot read: ImageFolder, HDF5 and manifest "
                "channels need files. Start the job with FastFile input mode (`imgclf sagemaker train "
                "--input-mode FastFile`): it streams the files from S3 as they are read, with no full copy first."
            )
        sharded = entry.get("S3DistributionType") == "ShardedByS3Key"
        out[CHANNEL_ALIASES.get(name, name)] = ChannelInput(mode, sharded)
    return out
