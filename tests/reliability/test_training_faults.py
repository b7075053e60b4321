"""Training under faults: a kill mid-epoch, a corrupt checkpoint, a full model disk, and broken images.

Every test runs the real trainer in a subprocess (`imgclf train` or sagemaker-training's `train` on a fake
/opt/ml) with the fast digits settings, and checks what a user would see: exit code, log, output/failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from support import VENV_BIN
from support.reliability import imgclf_train, metric, small_sample, small_tmpfs
from support.training import FAST_HYPERPARAMETERS, fast_flags, make_opt_ml, read_until, sagemaker_train

pytestmark = pytest.mark.reliability

# Same seed, same data: a resumed run reshuffles from the restored RNG, so its numbers differ a little; on the
# 40-per-class subset one image of valid is 1 %.
ACCURACY_TOLERANCE = 0.08
TRAIN_TIMEOUT = 600  # a shared 2-core CI box under load


def _train_args(data, tmp_path, name: str, **overrides: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--model-dir",
        str(tmp_path / name / "model"),
        "--checkpoint-dir",
        str(tmp_path / name / "ckpt"),
        *fast_flags(patience="0", **overrides),
    ]


def test_sigkill_mid_epoch_then_restart_resumes_and_matches_an_uninterrupted_run(sample_data, tmp_path):
    sample_data = small_sample(sample_data, tmp_path / "data", per_class=40)
    reference = imgclf_train(*_train_args(sample_data, tmp_path, "reference"), timeout=TRAIN_TIMEOUT)
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = _train_args(sample_data, tmp_path, "killed")
    proc = subprocess.Popen(
        [str(VENV_BIN / "imgclf"), "train", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    first = read_until(proc, r"^epoch=1 ", timeout=TRAIN_TIMEOUT)
    time.sleep(min(metric(first, "epoch_seconds")[0] * 0.3, 5))  # inside epoch 2
    ckpt = tmp_path / "killed" / "ckpt"
    mid_epoch = not (ckpt / "checkpoint-0002.pt").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert mid_epoch, "epoch 2 finished before the kill: the machine is too fast for this timing"
    assert not (tmp_path / "killed" / "model" / "model.pt").exists()

    resumed = imgclf_train(*args, timeout=TRAIN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from checkpoint after epoch 1" in resumed.stdout
    assert metric(resumed.stdout, "epoch") == [2, 3]
    for name in ("valid_accuracy", "test_accuracy"):
        want, got = metric(reference.stdout, name)[-1], metric(resumed.stdout, name)[-1]
        assert abs(want - got) <= ACCURACY_TOLERANCE, f"{name}: uninterrupted {want}, resumed {got}"
    assert (tmp_path / "killed" / "model" / "model.pt").exists()


def test_corrupt_newest_checkpoint_warns_and_falls_back_to_the_previous_one(sample_data, tmp_path):
    sample_data = small_sample(sample_data, tmp_path / "data")
    args = _train_args(sample_data, tmp_path, "run", epochs="3")
    first = imgclf_train(*args, timeout=TRAIN_TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / "run" / "ckpt"
    newest = ckpt / "checkpoint-0003.pt"
    assert newest.exists() and (ckpt / "checkpoint-0002.pt").exists()  # the two newest are kept
    # As a crash during epoch 3's sync leaves it: checkpoint 3 truncated. Same run (same hyperparameters and data),
    # so its identity matches and the rerun resumes it from checkpoint 2.
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    rerun = imgclf_train(*args, timeout=TRAIN_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "checkpoint-0003.pt is unreadable" in rerun.stderr
    assert "Resumed from checkpoint after epoch 2" in rerun.stdout
    assert metric(rerun.stdout, "epoch") == [3]


def test_a_finished_runs_checkpoint_completes_only_that_run_and_is_never_a_new_result(sample_data, tmp_path):
    # Issue 12: resuming a finished run trains nothing. A spot job restarted after its last checkpoint but before
    # its model was uploaded (same job name, empty model dir) must still end cleanly, with the model it trained;
    # any other reuse of the directory is refused, naming it.
    data = small_sample(sample_data, tmp_path / "data")
    args = _train_args(data, tmp_path, "run", epochs="1")
    job_a, job_b = ({**os.environ, "TRAINING_JOB_NAME": name} for name in ("job-a", "job-b"))
    first = imgclf_train(*args, env=job_a, timeout=TRAIN_TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    model_dir, ckpt = tmp_path / "run" / "model", tmp_path / "run" / "ckpt"
    trained = torch.load(model_dir / "model.pt", weights_only=True)
    shutil.rmtree(model_dir)  # the restarted container's /opt/ml/model is empty

    restarted = imgclf_train(*args, env=job_a, timeout=TRAIN_TIMEOUT)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"{ckpt} holds a run that finished after epoch 1" in restarted.stdout
    assert "without training" in restarted.stdout
    assert metric(restarted.stdout, "epoch") == []  # no epoch trained
    rewritten = torch.load(model_dir / "model.pt", weights_only=True)
    assert all(torch.equal(trained[k], rewritten[k]) for k in trained)

    again = imgclf_train(*args, env=job_a, timeout=TRAIN_TIMEOUT)
    assert again.returncode == 2
    assert f"{ckpt} holds a run that finished" in again.stderr and f"already in {model_dir}" in again.stderr

    elsewhere = [str(tmp_path / "b") if arg == str(model_dir) else arg for arg in args]  # same checkpoint dir
    other = imgclf_train(*elsewhere, env=job_b, timeout=TRAIN_TIMEOUT)
    assert other.returncode == 2
    assert f"{ckpt} holds a run that finished" in other.stderr
    assert "written by job job-a; this job (job-b) would train nothing" in other.stderr
    assert not (tmp_path / "b" / "model.pt").exists()


def test_full_model_disk_writes_a_clear_failure_file_and_exits_non_zero(sample_data, tmp_path):
    data = small_sample(sample_data, tmp_path / "data")
    hps = {**FAST_HYPERPARAMETERS, "epochs": "1"}
    base = make_opt_ml(tmp_path / "ml", {"train": data / "train", "valid": data / "valid"}, hps)
    with small_tmpfs(base / "model", "1m"):
        proc = sagemaker_train(base)
        out, _ = proc.communicate(timeout=TRAIN_TIMEOUT)
        leftovers = sorted(p.name for p in (base / "model").iterdir())
    assert proc.returncode != 0, out[-3000:]
    failure = (base / "output" / "failure").read_text()
    # SageMaker shows the first 1,024 characters: the reason must be there, not below a traceback.
    assert re.search(r"no space left|disk (is )?full|not enough (disk )?space", failure[:1024], re.I), failure[:1024]
    assert str(base / "model") in failure[:1024], "the failure should say which directory is full"
    assert "model.pt" not in leftovers, "a half-written model.pt would be packaged as the model"


def _break_images(folder, good: bytes) -> None:
    """Three kinds of bad file: empty, text named .jpg, a PNG cut in half (from the `good` bytes)."""
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])


def test_bad_images_are_skipped_and_counted_and_training_succeeds(sample_data, tmp_path):
    data = small_sample(sample_data, tmp_path / "data")
    good = sorted((data / "train" / "0").glob("*.png"))[0].read_bytes()
    _break_images(data / "train" / "3", good)
    _break_images(data / "valid" / "7", good)
    out = imgclf_train(
        "--data", str(data), "--model-dir", str(tmp_path / "model"), *fast_flags(epochs="1"), timeout=TRAIN_TIMEOUT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train channel: skipped 3 unreadable file(s)" in out.stderr
    assert "valid channel: skipped 3 unreadable file(s)" in out.stderr
    for name in ("zero.jpg", "text.jpg", "truncated.png"):
        assert f"train/3/{name}" in out.stderr
    assert metric(out.stdout, "test_accuracy"), out.stdout


def test_truncated_jpeg_that_passes_the_scan_is_skipped_at_read_time(sample_data, tmp_path):
    from PIL import Image

    data = small_sample(sample_data, tmp_path / "data")
    folder = data / "train" / "5"
    src = sorted(folder.glob("*.png"))[0]
    Image.open(src).convert("RGB").resize((256, 256)).save(folder / "big.jpg", quality=95)
    blob = (folder / "big.jpg").read_bytes()
    (folder / "big.jpg").write_bytes(blob[: len(blob) * 2 // 3])
    out = imgclf_train(
        "--data", str(data), "--model-dir", str(tmp_path / "model"), *fast_flags(epochs="1"), timeout=TRAIN_TIMEOUT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "big.jpg" in out.stderr, "the truncated JPEG was neither skipped at scan nor reported at read time"


def test_class_folder_of_only_bad_files_fails_clearly_through_the_sagemaker_contract(sample_data, tmp_path):
    train = small_sample(sample_data, tmp_path / "data") / "train"
    bad = train / "bad"
    bad.mkdir()
    _break_images(bad, sorted((train / "0").glob("*.png"))[0].read_bytes())
    base = make_opt_ml(tmp_path / "ml", {"train": train}, FAST_HYPERPARAMETERS)
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=TRAIN_TIMEOUT)
    assert proc.returncode != 0, out[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Class folder(s) with no readable image in the train channel"), failure[:1024]
    assert "bad" in failure


def test_train_channel_with_nothing_readable_fails_clearly(tmp_path):
    train = tmp_path / "train"
    for cls in ("a", "b"):
        (train / cls).mkdir(parents=True)
        (train / cls / "zero.jpg").write_bytes(b"")
        (train / cls / "text.png").write_text("not a png")
    base = make_opt_ml(tmp_path / "ml", {"train": train}, FAST_HYPERPARAMETERS)
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "no readable image" in failure[:1024], failure[:1024]
