"""`imgclf report debug PATH` and `imgclf report profile PATH`: the answers SageMaker's Debugger rules and
ProfilerReport give in the cloud, from the same output, on this machine.

debug:   smdebug output (a local `--debugger-out` dir, or s3://.../debug-output) -> rule table on stdout,
         losses.png (train vs validation loss), report.md, report.html, rules.json in --out.
profile: a `--profile` dir (profile.json from imgclf.profiling) -> step-time breakdown, utilisation, advice and
         the bottleneck on stdout, profile.md, profile.html, profile.png in --out.
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
from pathlib import Path
from typing import Any

from imgclf.diagnostics import DEBUGGER_RULES
from imgclf.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report", metavar="KIND", required=True)
    debug = sub.add_parser("debug", help="Evaluate the Debugger rules on smdebug output.")
    debug.add_argument("path", help="smdebug output: local directory or s3:// URI.")
    debug.add_argument("--out", type=Path, help="Report directory (default: PATH-report next to a local PATH).")
    debug.add_argument(
        "--rules",
        default=",".join(DEBUGGER_RULES),
        help="Comma-separated rules to run (default: all five).",
    )
    debug.add_argument(
        "--rule-parameter",
        action="append",
        default=[],
        metavar="RULE.NAME=VALUE",
        help="Override a default threshold, e.g. Overfit.ratio_threshold=0.3 (repeatable).",
    )
    debug.add_argument("--fail-on-trigger", action="store_true", help="Exit 1 when any rule triggered.")
    profile = sub.add_parser("profile", help="Report on a `imgclf train --profile DIR` recording.")
    profile.add_argument("path", type=Path, help="The --profile directory (or its profile.json).")
    profile.add_argument("--out", type=Path, help="Report directory (default: the profile directory).")


def run(args: argparse.Namespace) -> int:
    if args.report == "debug":
        return run_debug(args)
    return run_profile(args)


# ---- debug ---------------------------------------------------------------------------------------------------------


def _rule_parameters(items: list[str]) -> dict[str, dict[str, Any]]:
    from imgclf.rules import DEFAULTS, SNAKE_NAMES

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        rule, dot, name = key.partition(".")
        rule = SNAKE_NAMES.get(rule, rule)
        if not sep or not dot or rule not in DEFAULTS or name not in DEFAULTS[rule]:
            known = "; ".join(f"{r}: {', '.join(p)}" for r, p in DEFAULTS.items())
            raise UserError(f"--rule-parameter {item!r}: expected RULE.NAME=VALUE with one of {known}.")
        default = DEFAULTS[rule][name]
        out.setdefault(rule, {})[name] = type(default)(value) if default is not None else value
    return out


def run_debug(args: argparse.Namespace) -> int:
    from imgclf import rules

    path = str(args.path)
    if not path.startswith("s3://") and not (Path(path) / "index").is_dir():
        raise UserError(
            f"{path} holds no smdebug output (no index/ directory). Point at the --debugger-out directory of a "
            "run, or the debug-output prefix SageMaker wrote (s3://.../debug-output)."
        )
    out = args.out or (Path(path).parent / (Path(path).name + "-report") if not path.startswith("s3://") else None)
    if out is None:
        raise UserError("--out is required for an s3:// PATH.")
    names = [n.strip() for n in args.rules.split(",") if n.strip()]
    unknown = [n for n in names if rules.SNAKE_NAMES.get(n, n) not in rules.RULES]
    if unknown:
        raise UserError(f"Unknown rule(s) {', '.join(unknown)}; known: {', '.join(rules.SNAKE_NAMES)}.")
    results = rules.evaluate(path, names, _rule_parameters(args.rule_parameter))
    series = rules.losses_by_mode(path)
    out.mkdir(parents=True, exist_ok=True)
    table = rule_table(results)
    print(table)
    plot = plot_losses(series, results, out / "losses.png")
    (out / "rules.json").write_text(json.dumps([r.as_dict() for r in results], indent=2))
    md = _debug_markdown(path, table, results, plot)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html("imgclf debugger report", md, plot))
    fired = [r.rule for r in results if r.triggered]
    print(f"\n{len(fired)} of {len(results)} rules triggered" + (f": {', '.join(fired)}" if fired else ""))
    print(f"Report: {out / 'report.html'} (plot {plot.name if plot else 'not written: no losses'})")
    return 1 if fired and args.fail_on_trigger else 0


def rule_table(results: list) -> str:
    rows = [("rule", "status", "step", "why")]
    for r in results:
        d = r.as_dict()
        step = "" if d["step"] is None else f"{d['step']} ({r.first.mode.lower()} {r.first.mode_step})"
        why = d["why"] or f"checked at {r.checks} step(s)"
        if r.triggered and len(r.findings) > 1:
            why += f" [+{len(r.findings) - 1} more]"
        rows.append((r.rule, r.status.upper() if r.triggered else r.status, step, why))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return "\n".join(lines)


def plot_losses(series: dict, results: list, path: Path) -> Path | None:
    """Train loss per saved step and validation loss per evaluation pass (the seeds' debugging-output figure)."""
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imgclf.rules import eval_passes

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    train = series.get("TRAIN") or series.get("GLOBAL") or []
    if train:
        ax.plot([g for g, _, _ in train], [v for _, _, v in train], color="tab:blue", lw=1.2, label="train loss")
    evals = series.get("EVAL") or []
    if evals:
        ax.plot(
            [g for g, _, _ in evals], [v for _, _, v in evals], ".", color="tab:orange", alpha=0.35, ms=4,
            label="validation loss (batch)",
        )  # fmt: skip
        passes = eval_passes(evals)
        ax.plot(
            [p[-1][0] for p in passes],
            [statistics.fmean(v for _, _, v in p) for p in passes],
            "o-", color="tab:orange", lw=1.8, label="validation loss (pass mean)",
        )  # fmt: skip
    values = [v for pts in series.values() for _, _, v in pts if v > 0]
    if values and max(values) / min(values) > 50:
        ax.set_yscale("log")  # a blown-up validation loss must not flatten the training curve
    ymax = ax.get_ylim()[1]
    for r in results:
        if r.triggered:
            ax.axvline(r.first.step, color="tab:red", ls="--", lw=0.8)
            ax.text(r.first.step, ymax, " " + r.rule, rotation=90, va="top", fontsize=7, color="tab:red")
    ax.set_xlabel("global step")
    ax.set_ylabel("loss")
    ax.set_title("Training vs validation loss (dashed: first step each rule triggered)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _debug_markdown(path: str, table: str, results: list, plot: Path | None) -> str:
    lines = [f"# Debugger rules for `{path}`", "", "```", table, "```", ""]
    if plot:
        lines += [f"![train vs validation loss]({plot.name})", ""]
    lines += ["## Parameters", ""]
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r.parameters.items())
        lines.append(f"- **{r.rule}** ({r.status}, {r.checks} checks): {params}")
        for f in r.findings[:5]:
            lines.append(f"  - step {f.step} ({f.mode.lower()} {f.mode_step}): {f.why}")
    return "\n".join(lines) + "\n"


def _html(title: str, markdown: str, image: Path | None) -> str:
    """A self-contained page: the markdown as preformatted text plus the image."""
    img = f'<p><img src="{html.escape(image.name)}" alt="plot" style="max-width:100%"></p>' if image else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'><h1>{html.escape(title)}</h1>{img}"
        f"<pre style='white-space:pre-wrap'>{html.escape(markdown)}</pre></body></html>\n"
    )


# ---- profile -------------------------------------------------------------------------------------------------------

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


def plot_profile(profile: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, samples = profile["steps"]["rows"], profile["samples"]
    if not rows and not samples:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), dpi=100)
    if rows:
        idx = [r[0] for r in rows]
        ax1.stackplot(idx, [r[2] for r in rows], [r[3] for r in rows], labels=["data wait", "compute"], alpha=0.8)
        ax1.set_xlabel("training step")
        ax1.set_ylabel("seconds")
        ax1.legend(loc="upper right", fontsize=8)
        ax1.set_title("Step time: waiting for data vs compute")
    t = [s["t"] for s in samples]
    for key, label in (("cpu_percent", "CPU %"), ("gpu_percent", "GPU %"), ("memory_percent", "memory %")):
        if any(key in s for s in samples):
            ax2.plot(t, [s.get(key, float("nan")) for s in samples], label=label, lw=1)
    ax2.set_xlabel("seconds")
    ax2.set_ylim(0, 105)
    ax2.legend(loc="upper right", fontsize=8)
    ax2.set_title(f"Utilisation every {profile['interval_s']} s")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def profile_markdown(a: dict[str, Any], plot: Path | None) -> str:
    def f(v, fmt="{:.1f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = [
        "# Profiler report",
        "",
        f"**Bottleneck: {a['bottleneck']}**",
        "",
        "## Step time",
        "",
        "| | value |",
        "|---|---|",
        f"| training steps recorded | {a['steps']} |",
        f"| median step | {f(a['step_seconds_median'], '{:.4f}')} s |",
        f"| waiting for data (total) | {a['data_seconds_total']:.2f} s |",
        f"| compute (total) | {a['compute_seconds_total']:.2f} s |",
        f"| dataloader stall fraction | {a['stall_fraction']:.1%} of step time; {a['stalled_steps_fraction']:.0%} of "
        "steps waited longer than they computed |",
        f"| dataloader worker processes | {a['dataloader_workers']} |",
        f"| CPU (host) mean / p95 | {f(a['cpu_percent_mean'])}% / {f(a['cpu_percent_p95'])}% of {a['cpus']} cores |",
        f"| training process tree | {f(a['process_cpu_cores_mean'], '{:.2f}')} cores busy on average |",
        f"| GPU | {a['gpu_name'] or 'none'}; mean {f(a['gpu_percent_mean'])}%, p95 {f(a['gpu_percent_p95'])}% |",
        f"| GPU memory p95 | {f(a['gpu_memory_percent_p95'])}% |",
        f"| peak RSS | {f(a['rss_mb_max'], '{:.0f}')} MB |",
        "",
    ]
    trace = a.get("trace")
    if trace:
        lines += [f"## torch.profiler trace ({trace['steps']} steps, `{trace['file']}`)", ""]
        lines += [f"- {k.replace('_', ' ')}: {v:.4f} s" for k, v in trace["phase_seconds"].items()]
        lines += ["", "| top operator (self CPU) | calls | seconds |", "|---|---|---|"]
        lines += [f"| `{op['name']}` | {op['calls']} | {op['self_cpu_s']:.4f} |" for op in trace["top_ops"][:8]]
        lines.append("")
    lines += ["## ProfilerReport rules", "", "| rule | triggered | detail |", "|---|---|---|"]
    lines += [f"| {c['rule']} | {'YES' if c['triggered'] else 'no'} | {c['detail']} |" for c in a["checks"]]
    lines += ["", "## Advice", ""]
    lines += [f"- {tip}" for tip in a["advice"]] or ["- nothing to fix: no rule triggered."]
    if plot:
        lines += ["", f"![step time and utilisation]({plot.name})"]
    return "\n".join(lines) + "\n"


def run_profile(args: argparse.Namespace) -> int:
    from imgclf.profiling import PROFILE_FILE

    path = args.path if args.path.suffix != ".json" else args.path.parent
    source = path / PROFILE_FILE
    if not source.is_file():
        raise UserError(f"{source} does not exist: point at the directory given to `imgclf train --profile`.")
    profile = json.loads(source.read_text())
    out = args.out or path
    out.mkdir(parents=True, exist_ok=True)
    a = analyse_profile(profile)
    plot = plot_profile(profile, out / "profile.png")
    md = profile_markdown(a, plot)
    (out / "profile.md").write_text(md)
    (out / "profile.html").write_text(_html("imgclf profiler report", md, plot))
    (out / "profile-analysis.json").write_text(json.dumps(a, indent=2, default=str))
    print(md)
    print(f"Report: {out / 'profile.html'}")
    return 0
