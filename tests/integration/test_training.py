"""The trainer for real: the CLI, sagemaker-training's `train` program on a fake /opt/ml, signals, DDP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from support import VENV_BIN
from support.ports import free_port
from support.training import FAST_HYPERPARAMETERS, fast_flags, make_opt_ml, read_until, sagemaker_train

from imgclf.artifact import load_artifact
from imgclf.metrics import METRIC_DEFINITIONS

pytestmark = pytest.mark.integration


def _imgclf(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "imgclf"), *args], capture_output=True, text=True, timeout=timeout)


def test_cli_trains_the_embedded_sample_above_95_percent(sample_data, tmp_path):
    out = _imgclf("train", "--data", str(sample_data), "--model-dir", str(tmp_path / "model"), *fast_flags(epochs="8"))
    assert out.returncode == 0, out.stderr[-3000:]
    test_line = re.search(r"test_loss=\S+ test_accuracy=(\S+)", out.stdout)
    assert test_line and float(test_line.group(1)) >= 0.95, out.stdout
    artifact = load_artifact(tmp_path / "model")
    assert artifact.index_to_name == {i: str(i) for i in range(10)}
    assert artifact.meta.image_size == 32


def test_sagemaker_contract_run_with_seed_spellings(sample_data, tmp_path):
    hps = {**FAST_HYPERPARAMETERS, "batch_size": "32", "epochs": "2", "sagemaker_job_name": '"job-1"'}
    del hps["batch-size"]
    base = make_opt_ml(tmp_path / "ml", {"train": sample_data / "train", "test": sample_data / "test"}, hps)
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert sorted(os.listdir(base / "model")) == [
        "confusion_matrix.png",
        "evaluation.json",
        "imgclf.json",
        "index_to_name.json",
        "model.pt",
    ]
    assert sorted(os.listdir(base / "checkpoints")) == ["checkpoint-0001.pt", "checkpoint-0002.pt"]
    assert not (base / "output" / "failure").exists()
    # Every metric definition finds its value in the real log, as SageMaker's regexes would.
    for definition in METRIC_DEFINITIONS:
        values = [float(v) for v in re.findall(definition["Regex"], out)]
        assert values, f"{definition['Name']} not found in the log"
    assert re.findall(METRIC_DEFINITIONS[0]["Regex"], out) == ["1", "2"]


@pytest.mark.parametrize(
    "hyperparameters, reason",
    [
        ({"lr": "abc"}, "Hyperparameter 'lr' must be a float, got 'abc'."),
        ({"batchsize": "8"}, "Unknown hyperparameter(s): batchsize."),
        ({"arch": "resnet1"}, "Hyperparameter 'arch' must be one of resnet18, resnet34, resnet50"),
    ],
)
def test_bad_hyperparameter_fails_with_a_readable_failure_file(sample_data, tmp_path, hyperparameters, reason):
    base = make_opt_ml(tmp_path / "ml", {"train": sample_data / "train"}, hyperparameters)
    shutil.rmtree(base / "output")  # SageMaker creates it; the toolkit alone would swallow the error without it
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(reason) and len(failure) < 1024


def test_missing_train_channel_fails_clearly(sample_data, tmp_path):
    base = make_opt_ml(tmp_path / "ml", {"valid": sample_data / "valid"}, FAST_HYPERPARAMETERS)
    proc = sagemaker_train(base)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "No 'train' channel" in (base / "output" / "failure").read_text()


def test_the_image_entry_on_a_tree_without_data_trains_on_the_embedded_sample(tmp_path):
    # What `docker run IMAGE train` runs (docker/entrypoint.sh), with the variable the image sets.
    base = tmp_path / "ml"
    (base / "input" / "config").mkdir(parents=True)
    hps = {**FAST_HYPERPARAMETERS, "epochs": "1", "sample": "200"}
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_TRAINING_MODULE": "imgclf.training.contract:main"}
    out = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "imgclf.training.contract"], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "training on the embedded digits sample" in out.stdout
    assert (base / "model" / "model.pt").is_file() and (base / "output" / "success").exists()


def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes(sample_data, tmp_path):
    hps = {**FAST_HYPERPARAMETERS, "epochs": "4", "patience": "0"}
    base = make_opt_ml(tmp_path / "ml", {"train": sample_data / "train", "valid": sample_data / "valid"}, hps)
    proc = sagemaker_train(base)
    read_until(proc, r"^epoch=1 ", timeout=180)
    time.sleep(1.0)  # now inside epoch 2
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert time.monotonic() - stopped_at < 15, "did not stop promptly"
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "stopped by signal 15 during epoch 2" in failure
    assert (base / "checkpoints" / "checkpoint-0001.pt").exists()
    assert not (base / "model" / "model.pt").exists()

    (base / "output" / "failure").unlink()
    rerun = sagemaker_train(base)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    assert "Resumed from checkpoint after epoch 1" in out
    assert re.findall(r"^epoch=(\d+) ", out, re.M) == ["2", "3", "4"]
    assert (base / "model" / "model.pt").exists()


def test_sigkill_mid_run_resumes_from_the_last_epoch_checkpoint(sample_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = [
        "train",
        "--data",
        str(sample_data),
        "--model-dir",
        str(tmp_path / "model"),
        "--checkpoint-dir",
        str(ckpt),
        *fast_flags(epochs="3", patience="0"),
    ]
    proc = subprocess.Popen(
        [str(VENV_BIN / "imgclf"), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    read_until(proc, r"^epoch=2 ", timeout=240)
    proc.kill()
    proc.wait()
    # A half-written newer checkpoint (killed during torch.save) must not stop the resume.
    (ckpt / "checkpoint-0003.pt").write_bytes(b"\x80\x02garbage")
    out = _imgclf(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed from checkpoint after epoch 2" in out.stdout
    assert "unreadable" in out.stderr
    assert re.findall(r"^epoch=(\d+) ", out.stdout, re.M) == ["3"]


def test_checkpoint_of_a_different_configuration_is_refused(sample_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    base = ["train", "--data", str(sample_data), "--checkpoint-dir", str(ckpt)]
    first = _imgclf(*base, "--model-dir", str(tmp_path / "a"), *fast_flags(epochs="1"))
    assert first.returncode == 0, first.stderr[-2000:]
    second = _imgclf(*base, "--model-dir", str(tmp_path / "b"), *fast_flags(epochs="1", arch="resnet34"))
    assert second.returncode == 2
    assert "holds a checkpoint of a different run" in second.stderr
    # Issue 12: the identity covers every hyperparameter that changes the result, and the data listing.
    lr = _imgclf(*base, "--model-dir", str(tmp_path / "c"), *fast_flags(epochs="1", lr="0.01"))
    assert lr.returncode == 2 and "lr: '0.003' -> '0.01'" in lr.stderr, lr.stderr[-2000:]
    other_data = tmp_path / "data"
    shutil.copytree(sample_data, other_data)
    next((other_data / "train" / "0").iterdir()).unlink()
    data = _imgclf(
        "train", "--data", str(other_data), "--checkpoint-dir", str(ckpt), "--model-dir", str(tmp_path / "d"),
        *fast_flags(epochs="1"),
    )  # fmt: skip
    assert data.returncode == 2 and "differs in data" in data.stderr, data.stderr[-2000:]


def test_frozen_backbone_with_cached_features_trains_only_the_head(sample_data, tmp_path):
    from imgclf.model import build_model

    weights = tmp_path / "backbone.pth"
    torch.save(build_model("resnet18", 1000).state_dict(), weights)  # stands in for downloaded ImageNet weights
    out = _imgclf(
        "train",
        "--data",
        str(sample_data),
        "--model-dir",
        str(tmp_path / "model"),
        *fast_flags(**{"pretrained-weights": str(weights), "train-backbone": "false", "epochs": "2"}),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trained = load_artifact(tmp_path / "model").model
    source = torch.load(weights, weights_only=True)
    assert torch.equal(trained.conv1.weight, source["conv1.weight"])  # backbone untouched
    assert torch.equal(trained.layer4[1].bn2.running_mean, source["layer4.1.bn2.running_mean"])


def test_debugger_hook_writes_a_loss_series_smdebug_can_read(sample_data, tmp_path):
    out = _imgclf(
        "train",
        "--data",
        str(sample_data),
        "--model-dir",
        str(tmp_path / "model"),
        "--debugger-out",
        str(tmp_path / "debug"),
        "--debug-train-interval",
        "10",
        "--debug-eval-interval",
        "2",
        *fast_flags(epochs="2"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    from smdebug.trials import create_trial

    trial = create_trial(str(tmp_path / "debug"))
    from smdebug import modes

    losses = trial.tensor_names(collection="losses")
    assert losses
    train_steps = trial.tensor(losses[0]).steps(mode=modes.TRAIN)
    eval_steps = trial.tensor(losses[0]).steps(mode=modes.EVAL)
    assert len(train_steps) >= 5 and len(eval_steps) >= 2
    assert all(float(trial.tensor(losses[0]).value(s, mode=modes.TRAIN)) > 0 for s in train_steps)


def test_two_hosts_train_with_ddp_and_only_rank_0_writes_the_model(sample_data, tmp_path):
    hosts = ["algo-1", "algo-2"]
    hps = {**FAST_HYPERPARAMETERS, "epochs": "2"}
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    procs, bases = [], []
    for host in hosts:
        base = make_opt_ml(
            tmp_path / host,
            {"train": sample_data / "train", "valid": sample_data / "valid"},
            hps,
            hosts=hosts,
            current_host=host,
        )
        bases.append(base)
        procs.append(sagemaker_train(base, env))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert (bases[0] / "model" / "model.pt").exists()
    assert not (bases[1] / "model" / "model.pt").exists()
    assert re.findall(r"^epoch=\d", outs[0], re.M) and not re.findall(r"^epoch=\d", outs[1], re.M)


def test_sagemaker_debugger_and_profiler_configs_are_honoured(sample_data, tmp_path):
    """What SageMaker writes for DebuggerHookConfig / ProfilerConfig turns on the hook and imgclf's profiler."""
    hps = {**FAST_HYPERPARAMETERS, "epochs": "1"}
    base = make_opt_ml(tmp_path / "ml", {"train": sample_data / "train", "valid": sample_data / "valid"}, hps)
    tensors = base / "output" / "tensors"
    config = base / "input" / "config"
    (config / "debughookconfig.json").write_text(
        json.dumps(
            {
                "LocalPath": str(tensors),
                "HookParameters": {"save_interval": "5"},
                "CollectionConfigurations": [{"CollectionName": "losses"}],
            }
        )
    )
    (config / "profilerconfig.json").write_text(json.dumps({"ProfilingIntervalInMilliseconds": 500}))
    proc = sagemaker_train(base)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    from smdebug.trials import create_trial

    trial = create_trial(str(tensors))
    assert trial.tensor_names(collection="losses")
    profile = json.loads((base / "output" / "data" / "profile" / "profile.json").read_text())
    assert profile, "empty profile"
