"""`imgclf report debug PATH` and `imgclf report profile PATH`: the answers SageMaker's Debugger rules and
ProfilerReport give in the cloud, from the same output, on this machine.

debug:   smdebug output (a local `--debugger-out` dir, or s3://.../debug-output) -> rule table on stdout,
         losses.png (train vs validation loss), report.md, report.html, rules.json in --out.
profile: a `--profile` dir (profile.json from imgclf's profiler) -> step-time breakdown, utilisation, advice and
         the bottleneck on stdout, profile.md, profile.html, profile.png in --out.
The work is imgclf.diagnostics.report's.
"""

from __future__ import annotations

import argparse
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


def _rule_parameters(items: list[str]) -> dict[str, dict[str, Any]]:
    """--rule-parameter RULE.NAME=VALUE items -> {Rule: {name: value typed like the default}}."""
    from imgclf.diagnostics.debugger_rules import DEFAULTS, SNAKE_NAMES

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
    from imgclf.diagnostics.report import write_debug_report

    names = [n.strip() for n in args.rules.split(",") if n.strip()]
    report = write_debug_report(str(args.path), args.out, names, _rule_parameters(args.rule_parameter))
    print(report.table)
    fired = report.fired
    print(f"\n{len(fired)} of {len(report.results)} rules triggered" + (f": {', '.join(fired)}" if fired else ""))
    print(f"Report: {report.html} (plot {report.plot.name if report.plot else 'not written: no losses'})")
    return 1 if fired and args.fail_on_trigger else 0


def run_profile(args: argparse.Namespace) -> int:
    from imgclf.diagnostics.report import write_profile_report

    report = write_profile_report(args.path, args.out)
    print(report.markdown)
    print(f"Report: {report.html}")
    return 0
