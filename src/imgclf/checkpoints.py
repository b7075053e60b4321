"""Epoch checkpoints in /opt/ml/checkpoints (SageMaker syncs it to S3 and restores it on a spot restart).

Files are `checkpoint-EEEE.pt`, written through a temp file and `os.replace`, so a kill mid-write leaves the
previous checkpoint intact; loading walks from the newest back past any that are unreadable.
Loading is weights-only: no pickle code runs.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
KEEP = 2


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save(directory: str | Path, epoch: int, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{epoch:04d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for _, old in _checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: str | Path | None) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None. A corrupt newest one is reported and skipped."""
    if directory is None:
        return None
    for epoch, path in _checkpoints(Path(directory)):
        try:
            # weights_only: a checkpoint is tensors, numbers, strings, lists and dicts; nothing in it may run code
            # (the directory is synced from S3, where anyone with bucket access can put a file).
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or corrupt file: fall back to the previous one
            log.warning("Checkpoint %s is unreadable (%s); trying an older one", path, exc)
            continue
        log.info("Resuming from %s (epoch %d done)", path, epoch)
        return state
    return None
