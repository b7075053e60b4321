"""Filesystem calls counted per path (directory listings, stats, opens): how a test shows that a reader walks a
channel once and stats no image, which matters on FastFile mounts, where such a call may be a request to S3."""

from __future__ import annotations

import builtins
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class FsCalls:
    listings: Counter = field(default_factory=Counter)  # os.scandir / os.listdir (os.walk, Path.iterdir)
    stats: Counter = field(default_factory=Counter)  # os.stat / os.lstat (Path.is_dir, is_file, exists)
    opens: Counter = field(default_factory=Counter)  # builtins.open (PIL's Image.open)


@contextmanager
def count_fs_calls(monkeypatch) -> Iterator[FsCalls]:
    calls = FsCalls()

    def counting(counter: Counter, real):
        def wrapper(path=".", *args, **kwargs):
            counter[os.fspath(path) if isinstance(path, (str, os.PathLike)) else path] += 1
            return real(path, *args, **kwargs)

        return wrapper

    with monkeypatch.context() as m:
        m.setattr(os, "scandir", counting(calls.listings, os.scandir))
        m.setattr(os, "listdir", counting(calls.listings, os.listdir))
        m.setattr(os, "stat", counting(calls.stats, os.stat))
        m.setattr(os, "lstat", counting(calls.stats, os.lstat))
        m.setattr(builtins, "open", counting(calls.opens, builtins.open))
        yield calls
