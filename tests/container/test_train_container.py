"""`docker run imgclf-train train` on a fake /opt/ml: the SageMaker training contract, end to end in the image."""

from __future__ import annotations

import re
import time

import pytest
from support import containers as sm

pytestmark = pytest.mark.container


def test_train_writes_artifact_metric_lines_checkpoints_and_success(trained):
    assert trained.returncode == 0, trained.output[-3000:]
    out = trained.output
    assert re.findall(r"^epoch=(\d+) train_loss=[\d.]+ valid_loss=[\d.]+ valid_accuracy=[\d.]+", out, re.M) == [
        "1",
        "2",
        "3",
    ], out[-3000:]
    test_acc = re.search(r"^test_loss=[\d.]+ test_accuracy=([\d.]+)", out, re.M)
    assert test_acc, out[-3000:]
    assert float(test_acc.group(1)) > 0.5, "3 epochs on the digits sample should be far above chance (0.1)"
    model = trained.base / "model"
    assert {"imgclf.json", "index_to_name.json", "model.pt"} <= {p.name for p in model.iterdir()}  # the artifact
    assert sorted(p.name for p in (trained.base / "checkpoints").glob("checkpoint-*.pt")), "no checkpoint written"
    assert not (trained.base / "output" / "failure").exists(), trained.failure
    assert (trained.base / "output" / "success").exists()


def test_bad_hyperparameter_exits_nonzero_with_a_readable_failure_file(images, fresh_opt_ml):
    result = sm.train(fresh_opt_ml(epochs="many"), images["train"], timeout=180)
    assert result.returncode != 0
    assert result.failure, result.output[-3000:]
    assert "epochs" in result.failure and "many" in result.failure, result.failure
    assert "Traceback" not in result.failure[:1024], "the first 1,024 characters are what SageMaker shows"


def test_no_argument_runs_training_as_sdk_v3_starts_it(images, fresh_opt_ml):
    # SDK v3 passes no argument: the image must train. A bad value fails fast and proves the trainer ran.
    result = sm.train(fresh_opt_ml(lr="fast"), images["train"], args=(), timeout=180)
    assert result.returncode != 0
    assert result.failure and "lr" in result.failure, result.output[-3000:]


def test_serve_argument_in_the_train_image_says_which_image_to_use(images, fresh_opt_ml):
    result = sm.train(fresh_opt_ml(), images["train"], args=("serve",), timeout=60)
    assert result.returncode == 2
    assert "imgclf serve image" in result.output


def test_docker_stop_during_training_leaves_a_checkpoint_and_exits_before_the_kill(images, fresh_opt_ml):
    base = fresh_opt_ml(epochs="50", sample="300")  # a short epoch 1: the stop lands in epoch 2
    name, proc = sm.start_train(base, images["train"])
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("epoch=1 "):
                break
        assert any(line.startswith("epoch=1 ") for line in lines), "".join(lines)[-3000:]
        time.sleep(1.0)  # inside epoch 2
        code, seconds = sm.stop(name, timeout_s=30)
        rest, _ = proc.communicate(timeout=60)
    finally:
        sm.docker("rm", "-f", name, check=False)
        proc.kill()
    output = "".join(lines) + rest
    print(f"\ndocker stop -> exit {code} in {seconds:.1f} s")
    assert seconds < 20, f"took {seconds:.1f} s: SIGTERM did not reach the trainer (docker stop timeout is 30 s)"
    assert code not in (0, 137), f"exit {code}: expected a failure exit from the trainer, not success or SIGKILL"
    assert (base / "checkpoints" / "checkpoint-0001.pt").exists(), output[-3000:]
    assert "stopped by signal 15" in (base / "output" / "failure").read_text()
