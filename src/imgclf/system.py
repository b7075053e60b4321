"""What this machine or container gives a process: CPUs, memory, GPUs (read without importing torch)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask: a container's --cpuset, taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def memory_mb() -> int:
    """Memory this process may use: the cgroup limit inside a container, else the machine's total."""
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            limits.append(int(raw) // (1 << 20))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return min([total, *limits])


def gpu_count() -> int:
    """NVIDIA devices visible to this process, without importing torch (the serve process stays small)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
