"""`imgclf train --profile DIR`: system utilisation, per-step timings and a torch.profiler trace, as JSON.

Use:
    with Profiler(out_dir) as p:
        fit(hp, cfg, profiler=p)      # the loop calls p.on_step(step, data_seconds, compute_seconds) per step

Writes into out_dir:
    profile.json   samples (every `interval` s: CPU %, per-process CPU %, memory, GPU util/memory where present),
                   steps (data / compute seconds per training step), trace summary (time by phase and top ops)
    trace.json     torch.profiler Chrome trace of `trace_steps` steps after `trace_skip` warm-up steps
                   (open in chrome://tracing or Perfetto)
`imgclf report profile DIR` turns profile.json into the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from imgclf import system

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
TRACE_FILE = "trace.json"


class _SystemSampler(threading.Thread):
    """Every `interval` seconds: CPU (system and this process tree), memory, GPU utilisation and memory."""

    def __init__(self, interval: float):
        super().__init__(name="imgclf-profiler", daemon=True)
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._t0 = time.time()
        try:
            import psutil

            self._psutil = psutil
            self._proc = psutil.Process()
            psutil.cpu_percent(None)
            self._proc.cpu_percent(None)
        except ImportError:  # pragma: no cover - psutil is in the lock; /proc fallback for slim installs
            self._psutil = None
            self._last_stat = _proc_stat()
        self._gpu = _gpu_reader()
        self._children: dict[int, Any] = {}

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a sampler must never break training
                log.debug("profiler sample failed: %s", exc)

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": round(time.time() - self._t0, 3)}
        if self._psutil is not None:
            ps = self._psutil
            s["cpu_percent"] = ps.cpu_percent(None)
            children = self._proc.children(recursive=True)
            proc_cpu = self._proc.cpu_percent(None)
            known = {}
            for c in children:
                c = self._children.get(c.pid, c)  # keep the Process: cpu_percent measures since its last call
                known[c.pid] = c
                try:
                    proc_cpu += c.cpu_percent(None)  # first reading of a new child is 0.0
                except ps.Error:
                    pass
            self._children = known
            s["process_cpu_percent"] = proc_cpu
            s["workers"] = len(children)
            s["rss_mb"] = round(self._proc.memory_info().rss / 2**20, 1)
            s["memory_percent"] = ps.virtual_memory().percent
        else:
            now = _proc_stat()
            busy = (now[0] - self._last_stat[0]) / max(now[1] - self._last_stat[1], 1)
            self._last_stat = now
            s["cpu_percent"] = round(100 * busy, 1)
        if self._gpu is not None:
            s.update(self._gpu())
        return s

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _proc_stat() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _gpu_reader():
    """torch.cuda.utilization (NVML) when it works, else nvidia-smi, else None (no GPU)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.utilization(0)

        def from_torch() -> dict[str, Any]:
            free, total = torch.cuda.mem_get_info(0)
            return {
                "gpu_percent": float(torch.cuda.utilization(0)),
                "gpu_memory_percent": round(100 * (total - free) / total, 1),
            }

        return from_torch
    except Exception:
        pass
    if shutil.which("nvidia-smi") is None:
        return None

    def from_smi() -> dict[str, Any]:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
        util, used, total = (float(x) for x in out[0].split(","))
        return {"gpu_percent": util, "gpu_memory_percent": round(100 * used / total, 1)}

    try:
        from_smi()
    except Exception:
        return None
    return from_smi


# torch.profiler event names for the phases of a step (record_function labels torch and the DataLoader emit).
_PHASES = {
    "dataloader": ("enumerate(DataLoader)",),
    "optimizer": ("Optimizer.step#", "Optimizer.zero_grad#"),
    "backward": ("autograd::engine::evaluate_function",),
}


class Profiler:
    """Context manager the trainer drives with `on_step(step, data_seconds, compute_seconds)` after each step."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        interval: float = 0.5,
        trace_skip: int = 5,
        trace_steps: int = 3,
        trace: bool = True,
    ):
        self.out_dir = Path(out_dir)
        self.interval = interval
        self.trace_skip, self.trace_steps, self.trace = trace_skip, trace_steps, trace
        self.steps: list[list[float]] = []  # [index, step, data_s, compute_s, t]
        self._sampler: _SystemSampler | None = None
        self._torch_prof = None
        self._trace_summary: dict[str, Any] | None = None
        self._t0 = 0.0
        self._lock = threading.Lock()

    # ---- context --------------------------------------------------------------------------------------------

    def __enter__(self) -> Profiler:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()
        self._sampler = _SystemSampler(self.interval)
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_trace()
        if self._sampler is not None:
            self._sampler.stop()
        self.write()

    # ---- called by the training loop ------------------------------------------------------------------------

    def on_step(self, step: int, data_seconds: float, compute_seconds: float) -> None:
        with self._lock:
            index = len(self.steps)
            self.steps.append(
                [index, int(step), float(data_seconds), float(compute_seconds), round(time.time() - self._t0, 3)]
            )
        if not self.trace:
            return
        # The trace covers the steps after warm-up: start after step `trace_skip`, stop `trace_steps` steps later.
        if index + 1 == self.trace_skip:
            self._start_trace()
        elif self._torch_prof is not None and index + 1 >= self.trace_skip + self.trace_steps:
            self._stop_trace()

    # ---- torch.profiler -------------------------------------------------------------------------------------

    def _start_trace(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        try:
            self._torch_prof = profile(activities=activities, record_shapes=False)
            self._torch_prof.start()
            self._trace_started = time.perf_counter()
            self._trace_first = len(self.steps)
        except Exception as exc:
            log.warning("torch.profiler could not start: %s", exc)
            self._torch_prof = None

    def _stop_trace(self) -> None:
        prof, self._torch_prof = self._torch_prof, None
        if prof is None:
            return
        wall = time.perf_counter() - self._trace_started
        try:
            prof.stop()
            prof.export_chrome_trace(str(self.out_dir / TRACE_FILE))
            self._trace_summary = _summarise(prof, wall, len(self.steps) - self._trace_first)
        except Exception as exc:
            log.warning("torch.profiler trace could not be written: %s", exc)

    # ---- output ---------------------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        import torch

        samples = self._sampler.samples if self._sampler else []
        return {
            "version": 1,
            "interval_s": self.interval,
            "started": self._t0,
            "duration_s": round(time.time() - self._t0, 3),
            "host": {
                "cpus": system.cpu_count(),
                "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            },
            "samples": samples,
            "steps": {"columns": ["index", "step", "data_s", "compute_s", "t"], "rows": self.steps},
            "trace": self._trace_summary,
        }

    def write(self) -> Path:
        path = self.out_dir / PROFILE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict()))
        tmp.replace(path)
        log.info("Profile written to %s", path)
        return path


def _summarise(prof, wall_s: float, steps: int) -> dict[str, Any]:
    """Time by phase (dataloader / forward / backward / optimizer) and the top operators of the traced steps."""
    averages = prof.key_averages()
    phase_us = {k: 0.0 for k in _PHASES}
    for ev in averages:
        for phase, prefixes in _PHASES.items():
            if ev.key.startswith(prefixes):
                phase_us[phase] += ev.cpu_time_total
    backward_ops = {ev.key for ev in averages if ev.key.startswith("autograd::engine::evaluate_function")}
    top = sorted(
        (ev for ev in averages if not ev.key.startswith(("enumerate(", "Optimizer.", "autograd::", "ProfilerStep"))),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )[:10]
    wall_us = wall_s * 1e6
    # evaluate_function events nest (one per autograd node, not recursive), so their sum is backward time.
    known = phase_us["dataloader"] + phase_us["optimizer"] + phase_us["backward"]
    return {
        "file": TRACE_FILE,
        "steps": steps,
        "wall_s": round(wall_s, 4),
        "phase_seconds": {
            "dataloader": round(phase_us["dataloader"] / 1e6, 4),
            "forward_and_other": round(max(wall_us - known, 0.0) / 1e6, 4),
            "backward": round(phase_us["backward"] / 1e6, 4),
            "optimizer": round(phase_us["optimizer"] / 1e6, 4),
        },
        "backward_nodes": len(backward_ops),
        "top_ops": [
            {
                "name": ev.key,
                "calls": ev.count,
                "self_cpu_s": round(ev.self_cpu_time_total / 1e6, 4),
                "self_cuda_s": round(getattr(ev, "self_device_time_total", 0.0) / 1e6, 4),
            }
            for ev in top
        ],
    }
