"""`imgclf report debug|profile` on the output of a real `imgclf train --debugger-out D --profile P` run."""

from __future__ import annotations

import json
import subprocess

import pytest
from support import VENV_BIN
from support.training import FAST_HYPERPARAMETERS

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def _imgclf(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "imgclf"), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dirs(sample_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    # Frozen random backbone + cached features: the hook sees only the head, so saving gradients stays cheap on a
    # busy 2-core machine; the trainer, hook, profiler and both reports are all the real ones.
    flags = []
    hps = {**FAST_HYPERPARAMETERS, "train-backbone": "false", "epochs": "3", "lr": "0.01"}
    for key, value in hps.items():
        if value in ("true", "false"):
            flags.append(f"--{key}" if value == "true" else f"--no-{key}")
        else:
            flags += [f"--{key}", value]
    proc = _imgclf(
        "train", "--data", str(sample_data), "--model-dir", str(root / "model"), *flags,
        "--debugger-out", str(root / "tensors"), "--debug-collections", "losses,gradients",
        "--debug-train-interval", "5", "--debug-eval-interval", "3", "--profile", str(root / "profile"),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_debug_report_prints_the_rule_table_and_writes_the_loss_plot(run_dirs):
    out = run_dirs / "debug-report"
    proc = _imgclf("report", "debug", str(run_dirs / "tensors"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("LossNotDecreasing", "VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"):
        assert rule in proc.stdout
    assert (out / "losses.png").read_bytes()[:8] == PNG
    results = {r["rule"]: r for r in json.loads((out / "rules.json").read_text())}
    # losses and gradients were saved: these rules had data (relu inputs were not, so PWI runs on gradients/loss)
    for rule in ("VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"):
        assert results[rule]["status"] in ("ok", "triggered") and results[rule]["checks"] > 0, results[rule]
    assert "<img" in (out / "report.html").read_text()

    strict = _imgclf("report", "debug", str(run_dirs / "tensors"), "--out", str(out), "--fail-on-trigger")
    assert strict.returncode == (1 if any(r["triggered"] for r in results.values()) else 0)


def test_debug_report_rule_parameters_change_the_verdict(run_dirs):
    out = run_dirs / "lenient"
    proc = _imgclf(
        "report", "debug", str(run_dirs / "tensors"), "--out", str(out), "--rules", "overfit",
        "--rule-parameter", "Overfit.ratio_threshold=1000000", "--fail-on-trigger",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert json.loads((out / "rules.json").read_text())[0]["parameters"]["ratio_threshold"] == 1e6


def test_profile_report_names_the_bottleneck(run_dirs):
    profile = json.loads((run_dirs / "profile" / "profile.json").read_text())
    assert len(profile["samples"]) >= 2 and profile["interval_s"] == 0.5
    assert len(profile["steps"]["rows"]) == 3 * 40  # 1,259 images / batch 32 = 40 steps an epoch
    assert profile["trace"]["steps"] == 3 and (run_dirs / "profile" / "trace.json").is_file()
    proc = _imgclf("report", "profile", str(run_dirs / "profile"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Bottleneck:" in proc.stdout and "dataloader stall fraction" in proc.stdout
    assert "CPU compute (no GPU)" in proc.stdout or "data loading" in proc.stdout
    assert (run_dirs / "profile" / "profile.png").read_bytes()[:8] == PNG


def test_reports_explain_a_wrong_path(tmp_path):
    proc = _imgclf("report", "debug", str(tmp_path))
    assert proc.returncode == 2 and "no smdebug output" in proc.stderr
    proc = _imgclf("report", "profile", str(tmp_path))
    assert proc.returncode == 2 and "--profile" in proc.stderr


def test_a_loop_that_waits_for_data_is_named_data_bound(tmp_path):
    """The Profiler driven by a real torch loop whose 'loader' sleeps: the report must blame data loading."""
    import time

    import torch

    from imgclf.diagnostics.profiler_rules import analyse_profile
    from imgclf.training.profiler import Profiler

    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 64)), torch.tensor([0, 1])).backward()
    opt.step()  # warm-up outside the recording: first calls pay lazy initialisation
    with Profiler(tmp_path / "p", interval=0.1, trace_skip=2, trace_steps=2) as p:
        for step in range(6):
            t0 = time.perf_counter()
            time.sleep(1.0)  # a starved DataLoader
            x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
            t1 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            p.on_step(step, t1 - t0, time.perf_counter() - t1)
    profile = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert len(profile["steps"]["rows"]) == 6 and profile["samples"]
    assert profile["trace"]["steps"] == 2 and profile["trace"]["phase_seconds"]["optimizer"] > 0
    a = analyse_profile(profile)
    assert a["stall_fraction"] > 0.5 and a["bottleneck"].startswith("data loading")
    assert any(c["rule"] == "Dataloader" and c["triggered"] for c in a["checks"])
