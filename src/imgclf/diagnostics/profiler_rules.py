"""The ProfilerReport's rules, evaluated locally on a `imgclf train --profile` recording (profile.json).

`analyse_profile` turns the recording (step rows and utilisation samples, imgclf.training's profiler) into the
numbers, the SageMaker profiler rules' verdicts with their default thresholds, advice, and the one-line
bottleneck; imgclf.diagnostics.report renders them.
"""

from __future__ import annotations

import statistics
from typing import Any

# ProfilerReport rule defaults (SageMaker Debugger profiler rules).
LOW_GPU_P95 = 70.0  # LowGPUUtilization threshold_p95
LOW_GPU_P5 = 10.0  # LowGPUUtilization threshold_p5
CPU_BOTTLENECK_CPU = 90.0  # CPUBottleneck cpu_threshold
CPU_BOTTLENECK_GPU = 10.0  # CPUBottleneck gpu_threshold
CPU_BOTTLENECK_SHARE = 50.0  # CPUBottleneck threshold (% of time)
BATCH_SIZE_P95 = 70.0  # BatchSize cpu/gpu/gpu_memory threshold_p95
DATALOADER_MIN, DATALOADER_MAX = 0.7, 2.0  # Dataloader min/max_threshold: workers vs CPU cores
STALL_SHARE = 0.2  # our threshold: share of step time spent waiting for the next batch


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def analyse_profile(profile: dict[str, Any]) -> dict[str, Any]:
    rows = profile["steps"]["rows"]
    data = [r[2] for r in rows]
    compute = [r[3] for r in rows]
    samples = profile["samples"]
    host = profile["host"]
    cpus = host.get("cpus") or 1
    total_data, total_compute = sum(data), sum(compute)
    total = total_data + total_compute
    stall = total_data / total if total else 0.0
    gpu = [s["gpu_percent"] for s in samples if "gpu_percent" in s]
    gpu_mem = [s["gpu_memory_percent"] for s in samples if "gpu_memory_percent" in s]
    cpu = [s["cpu_percent"] for s in samples if "cpu_percent" in s]
    proc_cpu = [s["process_cpu_percent"] for s in samples if "process_cpu_percent" in s]
    workers = max((s.get("workers", 0) for s in samples), default=0)
    a: dict[str, Any] = {
        "steps": len(rows),
        "step_seconds_median": statistics.median([d + c for d, c in zip(data, compute, strict=True)]) if rows else None,
        "data_seconds_total": total_data,
        "compute_seconds_total": total_compute,
        "stall_fraction": stall,
        "stalled_steps_fraction": (sum(d > c for d, c in zip(data, compute, strict=True)) / len(rows)) if rows else 0.0,
        "cpus": cpus,
        "gpus": host.get("gpus", 0),
        "gpu_name": host.get("gpu_name"),
        "cpu_percent_mean": statistics.fmean(cpu) if cpu else None,
        "cpu_percent_p95": _pct(cpu, 95) if cpu else None,
        "process_cpu_cores_mean": (statistics.fmean(proc_cpu) / 100) if proc_cpu else None,
        "gpu_percent_mean": statistics.fmean(gpu) if gpu else None,
        "gpu_percent_p95": _pct(gpu, 95) if gpu else None,
        "gpu_percent_p5": _pct(gpu, 5) if gpu else None,
        "gpu_memory_percent_p95": _pct(gpu_mem, 95) if gpu_mem else None,
        "rss_mb_max": max((s.get("rss_mb", 0) for s in samples), default=None),
        "dataloader_workers": workers,
        "trace": profile.get("trace"),
    }
    advice, checks = [], []

    def check(rule: str, fired: bool, detail: str, tip: str | None = None) -> None:
        checks.append({"rule": rule, "triggered": fired, "detail": detail})
        if fired and tip:
            advice.append(f"{rule}: {tip}")

    check(
        "Dataloader",
        # Worker count alone is only a problem when steps actually wait for data.
        stall > STALL_SHARE or (stall > 0.05 and not DATALOADER_MIN * cpus <= workers <= DATALOADER_MAX * cpus),
        f"{stall:.0%} of step time waiting for data; {workers} worker process(es) on {cpus} cores "
        f"(healthy: {DATALOADER_MIN * cpus:.0f}-{DATALOADER_MAX * cpus:.0f} workers, < {STALL_SHARE:.0%} waiting)",
        "raise --num-workers toward the core count"
        + (" (it was 0: loading runs in the training process)" if workers == 0 else "")
        + ", keep pin_memory on GPU, pre-resize images to --image-size, or use a frozen backbone with "
        "--cache-features so epochs skip decoding entirely.",
    )
    if gpu:
        check(
            "LowGPUUtilization",
            a["gpu_percent_p95"] < LOW_GPU_P95 or a["gpu_percent_p5"] < LOW_GPU_P5,
            f"GPU utilisation p95 {a['gpu_percent_p95']:.0f}% (threshold {LOW_GPU_P95:.0f}%), "
            f"p5 {a['gpu_percent_p5']:.0f}% (threshold {LOW_GPU_P5:.0f}%)",
            "feed the GPU faster (more --num-workers) or give it more work per step (larger --batch-size, --amp).",
        )
        starved = [
            s for s in samples if s.get("gpu_percent", 100) < CPU_BOTTLENECK_GPU
            and s.get("cpu_percent", 0) > CPU_BOTTLENECK_CPU
        ]  # fmt: skip
        low_gpu_share = 100 * len(starved) / max(len(samples), 1)
        check(
            "CPUBottleneck",
            low_gpu_share > CPU_BOTTLENECK_SHARE,
            f"{low_gpu_share:.0f}% of samples with CPU > {CPU_BOTTLENECK_CPU:.0f}% while GPU < "
            f"{CPU_BOTTLENECK_GPU:.0f}% (threshold {CPU_BOTTLENECK_SHARE:.0f}%)",
            "the CPU cannot keep up: move preprocessing off the step (cache features, smaller decode), "
            "or use an instance with more vCPUs per GPU.",
        )
        mem = a["gpu_memory_percent_p95"] or 0.0
        check(
            "BatchSize",
            a["gpu_percent_p95"] < BATCH_SIZE_P95 and mem < BATCH_SIZE_P95,
            f"GPU p95 {a['gpu_percent_p95']:.0f}% and GPU memory p95 {mem:.0f}% (both under {BATCH_SIZE_P95:.0f}%: "
            "the batch is too small for this GPU)",
            "increase --batch-size (and scale --lr with it) or choose a smaller instance.",
        )
    else:
        cpu_p95 = a["cpu_percent_p95"] or 0.0
        check(
            "CPUBottleneck",
            cpu_p95 > CPU_BOTTLENECK_CPU and stall <= STALL_SHARE,
            f"no GPU: the CPU does the compute; CPU p95 {cpu_p95:.0f}% (threshold {CPU_BOTTLENECK_CPU:.0f}%)",
            "training is compute-bound on the CPU: train on a GPU instance (ml.g5/ml.p3), or cut the work: "
            "smaller --image-size, a frozen backbone with --cache-features (epochs then cost seconds).",
        )
        check(
            "LowGPUUtilization",
            False,
            "no GPU on this host (not applicable; AMP and GPU rules apply on CUDA only)",
        )
    a["checks"], a["advice"] = checks, advice
    a["bottleneck"] = _bottleneck(a)
    return a


def _bottleneck(a: dict[str, Any]) -> str:
    stall = a["stall_fraction"]
    phases = (a.get("trace") or {}).get("phase_seconds") or {}
    split = ""
    if phases:
        total = sum(phases.values()) or 1.0
        split = (
            " (traced steps: " + ", ".join(f"{k.replace('_', ' ')} {v / total:.0%}" for k, v in phases.items()) + ")"
        )
    if stall > 0.5:
        return f"data loading: {stall:.0%} of step time is spent waiting for the next batch"
    if a["gpus"]:
        gpu = a["gpu_percent_mean"] or 0.0
        if stall > STALL_SHARE:
            return f"data loading: {stall:.0%} of step time waiting for data, GPU {gpu:.0f}% busy"
        if gpu < LOW_GPU_P95:
            return f"CPU-side work per step (GPU only {gpu:.0f}% busy while data waits are {stall:.0%}){split}"
        return f"GPU compute ({gpu:.0f}% busy){split}: the GPU is the limit, as it should be"
    if stall > STALL_SHARE:
        return f"data loading: {stall:.0%} of step time waiting for data on a {a['cpus']}-core host"
    return f"CPU compute (no GPU): {1 - stall:.0%} of step time is forward/backward/optimizer{split}"
