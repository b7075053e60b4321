"""Training helpers every tier shares: fast settings, a fake /opt/ml, sagemaker-training's `train` on it.

No test writes to the real /opt/ml: the SageMaker layout is built under tmp and passed as SAGEMAKER_BASE_DIR
(the training toolkit's own convention).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from support import VENV_BIN

# Settings that train the digits sample well in seconds (random init: no weights can be downloaded here).
FAST_HYPERPARAMETERS = {
    "pretrained-weights": "none",
    "train-backbone": "true",
    "augment": "false",
    "image-size": "32",
    "epochs": "3",
    "batch-size": "32",
    "lr": "0.003",
    # The engine export (ONNX + int8, validated) adds ~15 % to a run this short: off, except in the tests of it.
    "export-engines": "false",
}


def fast_flags(**overrides: str) -> list[str]:
    """FAST_HYPERPARAMETERS (plus overrides) as `imgclf train` flags: booleans become --x / --no-x."""
    flags = []
    for key, value in {**FAST_HYPERPARAMETERS, **overrides}.items():
        if value in ("true", "false"):
            flags.append(f"--{key}" if value == "true" else f"--no-{key}")
        else:
            flags += [f"--{key}", value]
    return flags


# What each rank logs per epoch under DDP (imgclf.training.loaders.log_epoch_share); local mode's host names carry
# a suffix (algo-1-bqo1j).
SHARE_LINE = re.compile(
    r"epoch (\d+): host (algo-\d+)\S* rank \d+ draws (\d+) train sample\(s\), digest ([0-9a-f]{16})"
)


def drawn_shares(logs: str) -> dict[tuple[int, str], tuple[int, int]]:
    """(epoch, host) -> (train samples drawn, their `sample_set_digest` as an int), from training logs."""
    return {(int(e), h): (int(n), int(d, 16)) for e, h, n, d in SHARE_LINE.findall(logs)}


def shard_keys(channel: Path) -> list[str]:
    """shard/KEY of every image in a channel's tar shards, read from the tars themselves (not the trainer's index):
    the keys `log_epoch_share` digests for a shard channel."""
    keys = []
    for shard in sorted(channel.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = [m.name for m in tar.getmembers() if m.name.endswith((".png", ".jpg", ".jpeg", ".webp"))]
        keys += [f"{shard.name}/{name.partition('.')[0]}" for name in names]
    return keys


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """Lines of proc.stdout up to the first matching `pattern`; kills proc and fails if not seen in time."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"{pattern!r} not seen in time; output:\n{''.join(seen)[-3000:]}")


def make_opt_ml(
    base: Path,
    channels: dict[str, Path],
    hyperparameters: dict[str, str],
    hosts: list[str] | None = None,
    current_host: str = "algo-1",
    input_config: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Lay out what SageMaker writes before `train`: config JSONs (string values) and channel folders.
    `input_config`: inputdataconfig.json entries per channel (TrainingInputMode, S3DistributionType) over File."""
    hosts = hosts or [current_host]
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": current_host, "hosts": hosts}))
    inputs = {name: {"TrainingInputMode": "File", **(input_config or {}).get(name, {})} for name in channels}
    (config / "inputdataconfig.json").write_text(json.dumps(inputs))
    for name, src in channels.items():
        shutil.copytree(src, base / "input" / "data" / name)
    (base / "output").mkdir(exist_ok=True)
    return base


def sagemaker_train(base: Path, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start sagemaker-training's real `train` program on a fake /opt/ml, running our framework module."""
    full_env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_TRAINING_MODULE": "imgclf.training.contract:main",
        **(env or {}),
    }
    return subprocess.Popen(
        [str(VENV_BIN / "train")],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def break_weights_consistently(model_dir: Path) -> None:
    """model.pt that cannot load, with imgclf.json's checksums re-recorded: an artifact that passes
    `imgclf serve`'s checks and fails only inside the worker (a bug in training, not tampering)."""
    import json

    from imgclf import checksums

    (model_dir / "model.pt").write_bytes(b"corrupt weights")
    meta_path = model_dir / "imgclf.json"
    meta = json.loads(meta_path.read_text())
    meta[checksums.KEY] = checksums.record(model_dir, meta[checksums.KEY])
    meta_path.write_text(json.dumps(meta))


def break_exported_engine_consistently(model_dir: Path) -> None:
    """The torch-free counterpart of `break_weights_consistently`: model.onnx that cannot load, recorded in
    imgclf.json as the validated onnx engine with its true sha256, so only the worker's load fails."""
    from imgclf.checksums import sha256_file
    from imgclf.export import save_record

    onnx = model_dir / "model.onnx"
    onnx.write_bytes(b"corrupt graph")
    entry = {"file": onnx.name, "sha256": sha256_file(onnx), "agreement": 1.0, "accuracy": 1.0, "p50_ms": 1.0}
    save_record(model_dir, {"eager": {"p50_ms": 2.0}, "engines": {"onnx": entry}, "rejected": {}})


def export_onnx_on_noise(model_dir: Path, images_per_class: int = 4) -> dict:
    """Export and validate model.onnx for an artifact a test made (random weights, any classes), so the torch-free
    serve flavour can serve it. Validated on seeded noise images, as many per class as asked: top-1 agreement with
    eager is the export's check (accuracy means nothing here). Returns the export record; fails if onnx is not kept."""
    import json

    import numpy as np
    from PIL import Image

    from imgclf.export import export_engines

    meta = json.loads((model_dir / "imgclf.json").read_text())
    classes, size = meta["num_classes"], meta["image_size"]
    samples = [(i, i % classes) for i in range(images_per_class * classes)]

    def noise(key: int) -> Image.Image:
        return Image.fromarray(np.random.default_rng(key).integers(0, 256, (size, size, 3), dtype=np.uint8))

    record = export_engines(model_dir, (samples, noise), candidates=("onnx",), latency_runs=3)
    assert "onnx" in record["engines"], record["rejected"]
    return record


def sample_jpeg_bytes(sample: Path, per_class: int) -> list[bytes]:
    """The first `per_class` test images of each class of a sample tree, as JPEG bytes (the serving content type)."""
    from PIL import Image

    out = []
    for class_dir in sorted((sample / "test").iterdir()):
        for path in sorted(class_dir.iterdir())[:per_class]:
            buf = io.BytesIO()
            Image.open(path).convert("RGB").save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out
