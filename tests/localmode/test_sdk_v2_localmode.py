"""Smoke tests 1-4: SDK v2 (`sagemaker<3`, the seeds' API) local mode against imgclf-train / imgclf-serve.

Each test runs one driver under .venv-sdk2 and checks what it returns (model.tar.gz, job logs, endpoint answers,
transform outputs) against the artifact's own predictions in-process.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from support.localmode import CONTAINER_HYPERPARAMETERS, jpeg_samples, local_top1, top1

from imgclf.metrics import METRIC_DEFINITIONS

pytestmark = pytest.mark.localmode

ARTIFACT_FILES = {"model.pt", "index_to_name.json", "imgclf.json"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _extract(model_data: str, dest: Path) -> Path:
    assert model_data.startswith("file://"), model_data
    tar = Path(model_data.removeprefix("file://"))
    assert tar.name == "model.tar.gz" and tar.is_file(), model_data
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar) as t:
        names = t.getnames()
        t.extractall(dest, filter="data")
    return dest, names


def _fit(localmode, train_image, small_sample, instance_count: int):
    channels = {name: str(small_sample / name) for name in ("train", "valid", "test")}
    return localmode.driver(
        "v2_fit",
        sdk=2,
        args={
            "workdir": str(localmode.workdir / "sagemaker-local"),
            "image": train_image,
            "hyperparameters": CONTAINER_HYPERPARAMETERS,
            "instance_count": instance_count,
            "channels": channels,
        },
    )


def test_v2_estimator_fit_local_writes_model_tar_and_logs_metric_lines_the_definitions_read(
    localmode, train_image, small_sample, tmp_path
):
    result, output, seconds = _fit(localmode, train_image, small_sample, instance_count=1)
    print(f"SMOKE 1 v2 fit: {seconds:.1f} s (fit {result['seconds']:.1f} s)")
    assert result["instance_type"] == "local"
    assert result["hyperparameters"] == CONTAINER_HYPERPARAMETERS
    model_dir, names = _extract(result["model_data"], tmp_path / "model")
    assert ARTIFACT_FILES <= set(names), names
    meta = json.loads((model_dir / "imgclf.json").read_text())
    assert meta["num_classes"] == 10 and meta["image_size"] == 32
    assert sorted(json.loads((model_dir / "index_to_name.json").read_text()).values()) == [str(i) for i in range(10)]

    # The job log (compose prefixes each container line) holds our metric lines; every definition reads them.
    log = ANSI.sub("", output).splitlines()
    epochs = [line for line in log if re.search(r"\bepoch=\d+ train_loss=", line)]
    assert len(epochs) == int(CONTAINER_HYPERPARAMETERS["epochs"]), output[-4000:]
    tests = [line for line in log if re.search(r"\btest_loss=", line)]
    assert len(tests) == 1
    for d in METRIC_DEFINITIONS:
        values = [float(m.group(1)) for line in epochs + tests for m in [re.search(d["Regex"], line)] if m]
        assert values, f"{d['Name']} not found in the job log"
    accuracies = [float(re.search(r"valid_accuracy=([0-9.]+)", line).group(1)) for line in epochs]
    assert all(0.0 <= a <= 1.0 for a in accuracies), epochs


def test_v2_fit_with_two_instances_trains_with_ddp_across_two_containers_into_one_model(
    localmode, train_image, small_sample, tmp_path
):
    result, output, seconds = _fit(localmode, train_image, small_sample, instance_count=2)
    print(f"SMOKE 2 v2 fit x2: {seconds:.1f} s (fit {result['seconds']:.1f} s)")
    # compose prefixes each line with "<project>-algo-N-<suffix> |" (in colour).
    lines = [ANSI.sub("", line) for line in output.splitlines()]
    # Both containers ran the trainer...
    for host in ("algo-1", "algo-2"):
        assert any(re.search(rf"\b{host}-\w+\s+\|.*Hyperparameters:", line) for line in lines), host
    # ...as one DDP job: only rank 0 (algo-1) evaluates and prints epochs; both hosts report success (compose
    # runs with --abort-on-container-exit, so only the first host's "exited with code 0" is logged).
    epoch_hosts = {m.group(1) for line in lines for m in [re.search(r"\b(algo-\d)-\w+\s+\|\s*epoch=\d", line)] if m}
    assert epoch_hosts == {"algo-1"}, epoch_hosts
    succeeded = {
        m.group(1)
        for line in lines
        for m in [re.search(r"\b(algo-\d)-\w+\s+\|.*Reporting training SUCCESS", line)]
        if m
    }
    assert succeeded == {"algo-1", "algo-2"}, output[-3000:]
    _, names = _extract(result["model_data"], tmp_path / "model")
    assert sorted(n for n in names if n.endswith("model.pt")) == ["model.pt"], names


def test_v2_model_deploy_local_predicts_jpeg_top1_rejects_bad_payload_4xx_and_deletes_fast(
    localmode, serve_image, trained_model, sample_data, tmp_path
):
    labels = jpeg_samples(sample_data, tmp_path / "jpegs", per_class=1)
    expected = local_top1(trained_model["dir"], list(labels))
    result, _, seconds = localmode.driver(
        "v2_deploy",
        sdk=2,
        args={
            "workdir": str(localmode.workdir / "sagemaker-local"),
            "image": serve_image,
            "model_tar": str(trained_model["tar"]),
            "images": list(labels),
        },
    )
    print(
        f"SMOKE 3 v2 deploy: {seconds:.1f} s (deploy {result['deploy_seconds']:.1f} s, "
        f"delete {result['delete_seconds']:.1f} s, container gone after {result['stopped_seconds']} s)"
    )
    assert result["predictor_class"] == "Predictor"
    assert result["serializer"] == ["IdentitySerializer", "image/jpeg"]
    assert result["deserializer"] == "JSONDeserializer"
    assert result["containers"] == 1
    got = {path: top1(answer) for path, answer in result["answers"].items()}
    # The endpoint agrees with the artifact in-process on every image (same preprocessing), and is mostly right.
    assert got == expected
    assert sum(got[p] == labels[p] for p in labels) >= 0.6 * len(labels), (got, labels)
    for name, bad in result["bad"].items():
        assert 400 <= bad["status"] < 500, (name, bad)
    assert top1(result["after_bad"]) == expected[next(iter(labels))]
    assert result["still_running"] == 0
    assert result["stopped_seconds"] is not None and result["stopped_seconds"] < 15
    assert result["delete_seconds"] < 30


def test_v2_transformer_local_batch_transform_writes_one_json_per_image(
    localmode, serve_image, trained_model, sample_data, tmp_path
):
    labels = jpeg_samples(sample_data, tmp_path / "batch-in", per_class=2)
    expected = local_top1(trained_model["dir"], list(labels))
    result, _, seconds = localmode.driver(
        "v2_transform",
        sdk=2,
        args={
            "workdir": str(localmode.workdir / "sagemaker-local"),
            "image": serve_image,
            "model_tar": str(trained_model["tar"]),
            "input": str(tmp_path / "batch-in"),
            "output": str(localmode.workdir / "batch-out"),
        },
    )
    print(f"SMOKE 4 v2 transform: {seconds:.1f} s (transform {result['seconds']:.1f} s)")
    outputs = result["outputs"]
    assert sorted(outputs) == sorted(f"{Path(p).name}.out" for p in labels), sorted(outputs)
    for path in labels:
        answer = json.loads(outputs[f"{Path(path).name}.out"])
        assert top1(answer) == expected[path], (path, answer)
