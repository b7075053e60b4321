"""Multi-host / multi-GPU layout from SageMaker's host list: who is rank 0, which backend, which device.

SageMaker gives every host the same sorted `hosts` list and its own `current_host`. One process per GPU
(or one per host on CPU instances); world size = hosts x processes per host; global rank =
host index x processes per host + local rank; the master is the first host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Layout:
    hosts: tuple[str, ...] = ("localhost",)
    current_host: str = "localhost"
    procs_per_host: int = 1
    local_rank: int = 0
    use_cuda: bool = False

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.procs_per_host

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host) * self.procs_per_host + self.local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.use_cuda else torch.device("cpu")

    def data_split(self, host_sharded: bool) -> tuple[int, int]:
        """(replicas, rank) the train data is split over: every rank, or only this host's ranks when SageMaker
        already gave each host its own share (ShardedByS3Key); splitting that again by global rank would drop
        the samples the other hosts' ranks were assigned but do not have."""
        return (self.procs_per_host, self.local_rank) if host_sharded else (self.world_size, self.rank)

    def for_local_rank(self, local_rank: int) -> Layout:
        return Layout(self.hosts, self.current_host, self.procs_per_host, local_rank, self.use_cuda)


def single_process() -> Layout:
    return Layout(use_cuda=torch.cuda.is_available())


def from_hosts(hosts: list[str], current_host: str) -> Layout:
    """One process per visible GPU, or one per host without GPUs."""
    gpus = torch.cuda.device_count()
    hosts = sorted(hosts)
    if current_host not in hosts:
        raise ValueError(f"current_host {current_host!r} is not in hosts {hosts}")
    return Layout(tuple(hosts), current_host, max(gpus, 1), 0, gpus > 0)


def init(layout: Layout) -> None:
    """Join the process group. MASTER_ADDR/MASTER_PORT override the first host (tests, custom networks)."""
    if not layout.distributed or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", layout.hosts[0])
    os.environ.setdefault("MASTER_PORT", str(DEFAULT_PORT))
    if layout.use_cuda:
        torch.cuda.set_device(layout.local_rank)
    dist.init_process_group(
        backend="nccl" if layout.use_cuda else "gloo",
        rank=layout.rank,
        world_size=layout.world_size,
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], layout: Layout) -> list[float]:
    if not layout.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=layout.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather(value: Any, layout: Layout) -> list[Any]:
    """Every rank's `value` (picklable), in rank order; just [value] in a single process."""
    if not layout.distributed:
        return [value]
    out: list[Any] = [None] * layout.world_size
    dist.all_gather_object(out, value)
    return out


def all_reduce_min(value: int, layout: Layout) -> int:
    if not layout.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=layout.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())
