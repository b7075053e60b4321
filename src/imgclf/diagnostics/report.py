"""The reports `imgclf report` writes: Debugger rule tables and loss plots, profiler step-time reports.

debug:   smdebug output -> the rule table, losses.png (train vs validation loss), report.md, report.html and
         rules.json (imgclf.diagnostics.debugger_rules evaluates the rules).
profile: a `--profile` directory's profile.json -> profile.md, profile.html, profile.png and
         profile-analysis.json (imgclf.diagnostics.profiler_rules analyses it).
"""

from __future__ import annotations

import html
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf.errors import UserError

# ---- debug ---------------------------------------------------------------------------------------------------------


@dataclass
class DebugReport:
    results: list  # debugger_rules.RuleResult, in the order asked for
    table: str  # the rule table, as printed
    html: Path
    plot: Path | None  # None: no losses were saved

    @property
    def fired(self) -> list[str]:
        return [r.rule for r in self.results if r.triggered]


def write_debug_report(
    path: str, out: Path | None, rules: list[str], parameters: dict[str, dict[str, Any]] | None = None
) -> DebugReport:
    """Evaluate `rules` on the smdebug output at `path` (local or s3://) and write the report files into `out`
    (default: PATH-report next to a local PATH)."""
    from imgclf.diagnostics import debugger_rules

    if not path.startswith("s3://") and not (Path(path) / "index").is_dir():
        raise UserError(
            f"{path} holds no smdebug output (no index/ directory). Point at the --debugger-out directory of a "
            "run, or the debug-output prefix SageMaker wrote (s3://.../debug-output)."
        )
    out = out or (Path(path).parent / (Path(path).name + "-report") if not path.startswith("s3://") else None)
    if out is None:
        raise UserError("--out is required for an s3:// PATH.")
    unknown = [n for n in rules if debugger_rules.SNAKE_NAMES.get(n, n) not in debugger_rules.RULES]
    if unknown:
        raise UserError(f"Unknown rule(s) {', '.join(unknown)}; known: {', '.join(debugger_rules.SNAKE_NAMES)}.")
    results = debugger_rules.evaluate(path, rules, parameters)
    series = debugger_rules.losses_by_mode(path)
    out.mkdir(parents=True, exist_ok=True)
    table = rule_table(results)
    plot = plot_losses(series, results, out / "losses.png")
    (out / "rules.json").write_text(json.dumps([r.as_dict() for r in results], indent=2))
    md = _debug_markdown(path, table, results, plot)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html("imgclf debugger report", md, plot))
    return DebugReport(results=results, table=table, html=out / "report.html", plot=plot)


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

    from imgclf.diagnostics.debugger_rules import eval_passes

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


@dataclass
class ProfileReport:
    markdown: str
    html: Path


def write_profile_report(path: Path, out: Path | None = None) -> ProfileReport:
    """Analyse the recording in the `--profile` directory `path` (or its profile.json) and write the report files
    into `out` (default: the profile directory)."""
    from imgclf.diagnostics.profiler_rules import analyse_profile
    from imgclf.training.profiler import PROFILE_FILE

    path = path if path.suffix != ".json" else path.parent
    source = path / PROFILE_FILE
    if not source.is_file():
        raise UserError(f"{source} does not exist: point at the directory given to `imgclf train --profile`.")
    profile = json.loads(source.read_text())
    out = out or path
    out.mkdir(parents=True, exist_ok=True)
    a = analyse_profile(profile)
    plot = plot_profile(profile, out / "profile.png")
    md = profile_markdown(a, plot)
    (out / "profile.md").write_text(md)
    (out / "profile.html").write_text(_html("imgclf profiler report", md, plot))
    (out / "profile-analysis.json").write_text(json.dumps(a, indent=2, default=str))
    return ProfileReport(markdown=md, html=out / "profile.html")


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
