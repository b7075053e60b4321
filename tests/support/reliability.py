"""Helpers the reliability tests share: tiny samples, `imgclf train`, metric lines, a tmpfs, the load generator."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, VENV_BIN

sys.path.insert(0, str(REPO / "benchmarks"))
import loadgen  # noqa: E402,F401  (the benchmarks' load generator and server helpers, re-exported)


def imgclf_train(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "imgclf"), "train", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def small_sample(src: Path, dst: Path, per_class: int = 15) -> Path:
    """The first `per_class` images of every class of every split: fault tests that need no accuracy run faster."""
    for split in sorted(p for p in src.iterdir() if p.is_dir()):
        for cls in sorted(p for p in split.iterdir() if p.is_dir()):
            (dst / split.name / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:per_class]:
                shutil.copy(f, dst / split.name / cls.name / f.name)
    return dst


def metric(text: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"\b{name}=([-+0-9.eE]+)", text)]


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str = "1m"):
    """A tmpfs of `size` mounted at `mountpoint` (root only); unmounted afterwards whatever happens."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the reliability tier runs as root): {done.stderr.strip()}")
    try:
        yield Path(mountpoint)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
