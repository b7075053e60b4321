"""RSS of one serving worker per runtime: what `imgclf.serving.environment.worker_memory_mb` estimates.

    PYTHONPATH=src .venv/bin/python benchmarks/worker_memory_bench.py [--archs resnet18 resnet50]
        [--out benchmarks/results/worker_memory.json]

For each architecture a 224 px model (random init: memory does not depend on the weights' values) is built and
exported (onnx, int8) on the digits sample. Then, per engine, a fresh Python process does what an MMS worker does
and reads its own RSS (psutil) twice:

    base     the handler's modules and the engine's runtime imported (torch + torchvision for eager,
             onnxruntime for onnx / int8), no model
    loaded   after `ImageClassifierHandler.initialize` (load, warm-up) and one 224 px JPEG request

The ONNX engines run with torch blocked (`sys.modules["torch"] = None`), as in the torch-free CPU image
(Dockerfile.serve-cpu); "onnx (torch installed)" runs the same engine without the block, to show whether the worker
imports torch anyway. One worker thread (the sizing rule's share on a small host).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WORKER = r"""
import json, sys
if {block_torch}:
    sys.modules["torch"] = None
    sys.modules["torchvision"] = None
import psutil
from imgclf.serving import handler_service  # noqa: F401  (what an MMS worker imports)
from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler
from support.handler_calls import image_bytes, mms_context
if {engine!r} == "eager":
    import torch, torchvision  # noqa: F401
else:
    import onnxruntime  # noqa: F401
rss = lambda: psutil.Process().memory_info().rss / 2**20
base = rss()
handler = ImageClassifierHandler(HandlerSettings(engine={engine!r}, workers=1))
handler.initialize(mms_context({model_dir!r}, [{{}}]))
body = image_bytes("JPEG", size=(256, 256))
answers = handler.handle([{{"body": body}}], mms_context({model_dir!r}, [{{"content-type": "image/jpeg"}}]))
assert handler.engine.name == {engine!r}, handler.engine.name
print(json.dumps({{"base_mb": base, "loaded_mb": rss(), "torch_imported": "torch" in sys.modules
                   and sys.modules["torch"] is not None}}))
"""


def exported_model(arch: str, work: Path, data: Path) -> Path:
    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.export import export_engines
    from imgclf.model import build_model

    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    model_dir = work / arch
    save_artifact(build_model(arch, len(classes)), ModelMeta.for_training(arch, len(classes), 224), classes, model_dir)
    export_engines(model_dir, data / "valid", data / "train", candidates=["onnx", "int8"], max_valid=20,
                   calibration_images=10, latency_runs=1, device="cpu")  # fmt: skip
    return model_dir


def measure(model_dir: Path, engine: str, block_torch: bool) -> dict:
    code = WORKER.format(engine=engine, model_dir=str(model_dir), block_torch=block_torch)
    env_path = f"{REPO / 'src'}:{REPO / 'tests'}"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{engine}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "worker_memory.json")
    args = parser.parse_args()

    from imgclf.sample_data import write_sample_data

    work = Path(tempfile.mkdtemp(prefix="imgclf-worker-memory-"))
    data = work / "digits"
    write_sample_data(data)
    rows = []
    for arch in args.archs:
        model_dir = exported_model(arch, work, data)
        record = json.loads((model_dir / "imgclf.json").read_text())["export"]
        files = {"eager": "model.pt"} | {n: e["file"] for n, e in record["engines"].items()}
        cases = [("eager", False)] + [(n, True) for n in record["engines"]] + [("onnx", False)]
        for engine, block in cases:
            if engine not in files:
                continue
            result = measure(model_dir, engine, block)
            label = engine if engine == "eager" or block else f"{engine} (torch installed)"
            weights_mb = (model_dir / files[engine]).stat().st_size / 2**20
            row = {"arch": arch, "engine": label, "weights_mb": round(weights_mb, 1)}
            row |= {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
            row["model_mb"] = round(row["loaded_mb"] - row["base_mb"], 1)
            row["model_per_weights_mb"] = round(row["model_mb"] / weights_mb, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
