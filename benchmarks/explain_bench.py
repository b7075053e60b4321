"""Explained vs plain requests, side by side in one run, in-process through the real serving handler.

Each request is one JPEG through `ImageClassifierHandler.handle` with MMS's own Context (decode, preprocess,
forward, encode: what a worker does, no HTTP); the explained one adds `X-Amzn-SageMaker-Custom-Attributes:
explain=gradcam` (one forward + backward pass with gradients, the map, the PNG overlay, base64 in the JSON).
Plain and explained requests alternate, so machine noise falls on both; the ratio of medians is the cost.

    python benchmarks/explain_bench.py [--repeats 20] [--out benchmarks/results/explain.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mms.context import Context, RequestProcessor
from PIL import Image

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model
from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler

CASES = [("resnet18", 224), ("mobilenet_v3_small", 224), ("resnet18", 32)]  # 32 px: the quick-start sample model


def _jpeg(size: int) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _request_ms(handler, body: bytes, headers: dict[str, str]) -> float:
    ctx = Context("model", "unused", None, 1, None, "1.1.11")
    ctx.request_processor = [RequestProcessor(headers)]
    started = time.perf_counter()
    handler.handle([{"body": body}], ctx)
    elapsed = (time.perf_counter() - started) * 1000
    assert ctx.request_processor[0].get_response_status_code() == 200
    return elapsed


def measure(arch: str, size: int, repeats: int, workdir: Path) -> dict:
    model_dir = workdir / f"{arch}-{size}"
    meta = ModelMeta.for_training(arch, 10, size)
    save_artifact(build_model(arch, 10), meta, [str(i) for i in range(10)], model_dir)
    handler = ImageClassifierHandler(HandlerSettings.from_env())
    ctx = Context("model", str(model_dir), None, 1, None, "1.1.11")
    handler.initialize(ctx)
    body = _jpeg(max(size, 256))
    plain_h = {"Content-Type": "image/jpeg"}
    explain_h = {**plain_h, "X-Amzn-SageMaker-Custom-Attributes": "explain=gradcam"}
    first_explain = _request_ms(handler, body, explain_h)  # builds the explainer (finds the layer): reported apart
    plain, explained = [], []
    for _ in range(repeats):
        plain.append(_request_ms(handler, body, plain_h))
        explained.append(_request_ms(handler, body, explain_h))
    p, e = statistics.median(plain), statistics.median(explained)
    return {
        "arch": arch,
        "image_size": size,
        "layer": handler.explainer.cam.layer_name,
        "plain_ms_p50": round(p, 1),
        "explained_ms_p50": round(e, 1),
        "ratio": round(e / p, 2),
        "first_explained_ms": round(first_explain, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size in CASES:
            rows.append(measure(arch, size, args.repeats, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"threads": torch.get_num_threads(), "repeats": args.repeats, "cases": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
