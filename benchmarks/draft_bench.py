"""JPEG draft mode (IMGCLF_JPEG_DRAFT): decode + resize + normalise cost with and without it, and how far its
tensor is from torchvision's eval transform, in one run.

    python benchmarks/draft_bench.py [--runs 60] [--model-dir DIR] [--out benchmarks/results/draft.json]

Cost: the server's path (decoders.decode_image -> serving.preprocess.Preprocessor) for one JPEG, draft off and on
alternating call by call, for a 256 px JPEG (what the serving benchmarks send: too small for draft, so both
should cost the same) and generated photo-sized JPEGs (1600x1200, 4032x3024); ResNet-18 settings (resize 256,
crop 224). Generated, no downloads: a photo-like image (gradients, edges, sensor noise) and matplotlib's bundled
grace_hopper.jpg (the one real photograph on this machine) upscaled.

Difference from torchvision (draft on vs `eval_transform` of the full decode), in 8-bit pixel levels
(|a - b| * std * 255): max, 99th percentile and mean, on those JPEGs and on grace_hopper.jpg at its own size
(512x600) for smaller models (resize 37 / 73 / 128, where draft applies without upscaling).

--model-dir: top-1 agreement of that model with draft on vs off, on its validation digits upscaled to
2048x1536 JPEGs with noise (benchmarks/engine_bench.py's images; --data, default the digits sample).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from imgclf.artifact import ModelMeta  # noqa: E402
from imgclf.images import eval_transform  # noqa: E402
from imgclf.serving.decoders import decode_image  # noqa: E402
from imgclf.serving.limits import RequestLimits  # noqa: E402
from imgclf.serving.preprocess import Preprocessing, Preprocessor  # noqa: E402


def grace_hopper() -> Image.Image | None:
    try:
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    except Exception:  # noqa: BLE001 - matplotlib missing or without its sample data: skip that row
        return None


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients, a few hard-edged shapes and sensor noise: what resampling and JPEG see in photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        base[y0 : y0 + height // 6, x0 : x0 + width // 6] = rng.integers(0, 256, 3)
    base += rng.normal(0, 8, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def levels(a: np.ndarray, b: np.ndarray, std: tuple[float, ...]) -> np.ndarray:
    return np.abs(a - b) * np.asarray(std, dtype=np.float32)[:, None, None] * 255


def difference(data: bytes, meta: ModelMeta) -> dict:
    """Draft on vs torchvision's eval transform of the full decode, and the decoded size draft chose."""
    limits = RequestLimits()
    drafted = Preprocessor(Preprocessing.from_meta(meta), draft=True)
    img = decode_image(data, limits, drafted.apply_draft)
    reference = eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
    d = levels(drafted(img), reference, meta.std)
    with Image.open(io.BytesIO(data)) as full:
        size = full.size
    return {
        "jpeg": f"{size[0]}x{size[1]}",
        "decoded": f"{img.width}x{img.height}",
        "resize": meta.resize_size,
        "max_levels": round(float(d.max()), 2),
        "p99_levels": round(float(np.percentile(d, 99)), 2),
        "mean_levels": round(float(d.mean()), 3),
    }


def cost(data: bytes, meta: ModelMeta, runs: int) -> dict:
    """p50 ms of decode + preprocess (the server's path), draft off and on alternating call by call."""
    limits = RequestLimits()
    prep = {False: Preprocessor(Preprocessing.from_meta(meta)), True: Preprocessor(Preprocessing.from_meta(meta), True)}

    def once(draft: bool) -> float:
        p = prep[draft]
        start = time.perf_counter()
        p(decode_image(data, limits, p.apply_draft if draft else None))
        return time.perf_counter() - start

    for _ in range(3):
        once(False), once(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(runs):
        for draft in (False, True) if i % 2 == 0 else (True, False):
            times[draft].append(once(draft))
    off, on = (float(np.median(times[k])) * 1000 for k in (False, True))
    return {"off_p50_ms": round(off, 2), "on_p50_ms": round(on, 2), "speedup": round(off / on, 2)}


def agreement(model_dir: Path, data_root: Path | None, n: int) -> dict:
    """Top-1 of the model with draft on vs off on upscaled validation digits (draft applies at 2048x1536)."""
    from engine_bench import upscaled

    from imgclf.artifact import load_meta
    from imgclf.channels import scan_image_folder
    from imgclf.sample_data import write_sample_data
    from imgclf.serving.engines import EagerEngine

    if data_root is None:
        data_root = Path(tempfile.mkdtemp(prefix="imgclf-draft-bench-"))
        write_sample_data(data_root)
    meta = load_meta(model_dir)
    engine = EagerEngine.load(model_dir, threads=os.cpu_count())
    valid = scan_image_folder(data_root / "valid", channel="valid").samples
    picks = valid[:: max(1, len(valid) // n)][:n]
    limits = RequestLimits()
    exact = Preprocessor(Preprocessing.from_meta(meta))
    drafted = Preprocessor(Preprocessing.from_meta(meta), draft=True)
    same = correct_off = correct_on = 0
    worst = 0.0
    for i, (path, label) in enumerate(picks):
        data = jpeg(upscaled(path, (2048, 1536), i))
        full = exact(decode_image(data, limits))
        fast = drafted(decode_image(data, limits, drafted.apply_draft))
        worst = max(worst, float(levels(fast, full, meta.std).max()))
        top = engine.predict(np.stack([full, fast])).argmax(1)
        same += int(top[0] == top[1])
        correct_off += int(top[0] == label)
        correct_on += int(top[1] == label)
    return {
        "images": len(picks),
        "top1_agreement": same / len(picks),
        "accuracy_off": correct_off / len(picks),
        "accuracy_on": correct_on / len(picks),
        "max_levels": round(worst, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="Timed calls per path and setting.")
    parser.add_argument("--model-dir", type=Path, help="A trained 224 px model for the top-1 agreement check.")
    parser.add_argument("--data", type=Path, help="ImageFolder root with valid/ (default: the digits sample).")
    parser.add_argument("--images", type=int, default=200, help="Validation images for the agreement check.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "draft.json")
    args = parser.parse_args()

    resnet = ModelMeta("resnet18", 10, 224, 256)
    hopper = grace_hopper()
    inputs = {
        "256x256 photo-like (the serving benchmarks' size)": jpeg(photo_like(256, 256)),
        "1600x1200 photo-like": jpeg(photo_like(1600, 1200, 1)),
        "4032x3024 photo-like (12 MP phone)": jpeg(photo_like(4032, 3024, 2)),
    }
    if hopper is not None:
        inputs["1600x1875 grace_hopper upscaled"] = jpeg(hopper.resize((1600, 1875), Image.Resampling.BICUBIC))
    result: dict = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "cost": {}, "difference": []}
    for name, data in inputs.items():
        result["cost"][name] = cost(data, resnet, args.runs)
        result["difference"].append({"input": name, **difference(data, resnet)})
        print(name, result["cost"][name], result["difference"][-1], flush=True)
    if hopper is not None:
        for resize, crop in ((37, 32), (73, 64), (128, 112)):
            meta = ModelMeta("resnet18", 10, crop, resize)
            result["difference"].append({"input": "grace_hopper.jpg 512x600", **difference(jpeg(hopper), meta)})
            print(result["difference"][-1], flush=True)
    if args.model_dir:
        result["agreement"] = agreement(args.model_dir, args.data, args.images)
        print("agreement", result["agreement"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
