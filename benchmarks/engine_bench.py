"""Engines side by side in one run: eager PyTorch vs ONNX Runtime fp32 vs int8, with and without preprocessing.

    python benchmarks/engine_bench.py [--model-dir DIR | --epochs N] [--device cuda] [--out results/engines.json]

Without --model-dir it trains ResNet-18 at 224 px on the embedded digits with `imgclf train` (random init,
FAST settings otherwise), then runs `imgclf.export.export_engines` on it (validation: the digits valid split,
calibration: train). Every path is timed in interleaved rounds (one call of each per round), batch 1:

    engine          the forward pass alone on a preprocessed (1, 3, 224, 224) tensor
    + preprocess    JPEG bytes -> decode -> RGB -> resize/crop/normalise -> forward -> probabilities
                    eager+torchvision is today's handler path; the others use imgclf.serving.preprocess (numpy)

--device cuda (a GPU machine): the export runs there (fp16 validated, engines timed on CUDA too: the record's
cuda_p50_ms) and the engines below run on the GPU: eager fp32 channels_last, fp16 when kept, onnx / int8 on ONNX
Runtime's CUDA provider when onnxruntime-gpu is installed (else on the CPU, which the output's "device" says).

Draft mode: top-1 agreement of the eager model and the mean pixel difference with draft on vs off, on the
validation images upscaled to large JPEGs (where draft applies), and its latency on one large JPEG.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def sample_model(out: Path, data: Path, epochs: int) -> None:
    """ResNet-18 at 224 px: trained with `imgclf train` for `epochs` (FAST settings otherwise), or with 0 epochs
    just built (random init) and saved as an artifact."""
    if epochs > 0:
        from support import VENV_BIN
        from support.training import fast_flags

        cmd = [str(VENV_BIN / "imgclf"), "train", "--data", str(data), "--model-dir", str(out)]
        subprocess.run(cmd + fast_flags(**{"image-size": "224", "epochs": str(epochs)}), check=True)
        return
    from imgclf.artifact import ModelMeta, save_artifact
    from imgclf.model import build_model

    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    meta = ModelMeta.for_training("resnet18", len(classes), 224)
    save_artifact(build_model("resnet18", len(classes)), meta, classes, out)


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def upscaled(path: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A digit upscaled to a photo-sized image with sensor-like noise (so JPEG and resampling have texture)."""
    rng = np.random.default_rng(seed)
    small = Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(small, dtype=np.float32) + rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def timed(paths: dict, runs: int) -> dict[str, np.ndarray]:
    for fn in paths.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {k: np.asarray(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="A trained 224 px model (default: train one).")
    parser.add_argument("--data", type=Path, help="ImageFolder root with train/ valid/ (default: digits sample).")
    parser.add_argument("--epochs", type=int, default=1, help="Epochs for the sample model (0: random init).")
    parser.add_argument("--runs", type=int, default=100, help="Timed rounds per path.")
    parser.add_argument("--threads", type=int, help="Intra-op threads (default: all CPUs).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the engines run and are timed.")
    parser.add_argument("--draft-images", type=int, default=200, help="Validation images for the draft check.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engines.json")
    args = parser.parse_args()

    import torch

    from imgclf.artifact import load_meta
    from imgclf.channels import scan_image_folder
    from imgclf.export import export_engines
    from imgclf.images import eval_transform, open_rgb
    from imgclf.sample_data import write_sample_data
    from imgclf.serving.decoders import decode_image
    from imgclf.serving.engines import EagerEngine, OnnxEngine
    from imgclf.serving.limits import RequestLimits
    from imgclf.serving.preprocess import Preprocessing, Preprocessor, open_for_model
    from imgclf.system import cpu_count

    threads = args.threads or cpu_count()
    work = Path(tempfile.mkdtemp(prefix="imgclf-engine-bench-"))
    data = args.data
    if data is None:
        data = work / "digits"
        write_sample_data(data)
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = work / "model"
        started = time.monotonic()
        sample_model(model_dir, data, args.epochs)
        print(f"sample model ({args.epochs} epochs) in {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    record = export_engines(model_dir, data / "valid", data / "train", threads=threads, device=args.device)
    export_s = time.monotonic() - started
    meta = load_meta(model_dir)
    torch.set_num_threads(threads)
    engines = {"eager": EagerEngine.load(model_dir, args.device, threads=threads)}
    for name, entry in record["engines"].items():
        if name == "fp16":
            engines[name] = EagerEngine.load(model_dir, args.device, threads=threads, half=True)
        else:
            engines[name] = OnnxEngine.load(model_dir / entry["file"], name, args.device, threads=threads)
    devices = {name: engine.device for name, engine in engines.items()}

    exact = Preprocessor(Preprocessing.from_meta(meta), draft=False)
    drafted = Preprocessor(Preprocessing.from_meta(meta), draft=True)
    tv = eval_transform(meta)
    valid = scan_image_folder(data / "valid", channel="valid").samples
    one_jpeg = jpeg_bytes(upscaled(valid[0][0], (320, 240), 0))  # ~ a 224 px request
    big_jpeg = jpeg_bytes(upscaled(valid[0][0], (2048, 1536), 0))
    tensor = exact(open_rgb(valid[0][0]))[None]
    limits = RequestLimits()  # the server's default request budget (a 2048 px JPEG is well within it)

    def request(engine, data_bytes, pre):
        def run():
            img = decode_image(data_bytes, limits)
            return engine.predict(pre(img)[None])

        return run

    def request_drafted(engine, data_bytes):
        def run():
            return engine.predict(drafted(open_for_model(io.BytesIO(data_bytes), drafted))[None])

        return run

    def request_torchvision(data_bytes):
        def run():
            img = decode_image(data_bytes, limits)
            return engines["eager"].predict(tv(img)[None].numpy())

        return run

    paths = {f"{n}": (lambda e=e: e.predict(tensor)) for n, e in engines.items()}
    paths["eager+torchvision (today)"] = request_torchvision(one_jpeg)
    for n, e in engines.items():
        paths[f"{n}+numpy"] = request(e, one_jpeg, exact)
    paths["eager+torchvision, 2048 px"] = request_torchvision(big_jpeg)
    for n, e in engines.items():
        paths[f"{n}+numpy, 2048 px"] = request(e, big_jpeg, exact)
        paths[f"{n}+numpy+draft, 2048 px"] = request_drafted(e, big_jpeg)
    timings = timed(paths, args.runs)

    # Draft mode's effect on pixels and on the eager model's top-1 (large JPEGs, where draft applies).
    picks = valid[:: max(1, len(valid) // args.draft_images)][: args.draft_images]
    same, diffs = 0, []
    std = np.asarray(meta.std, dtype=np.float32)[:, None, None]
    for i, (path, _) in enumerate(picks):
        data_bytes = jpeg_bytes(upscaled(path, (2048, 1536), i))  # draft applies: >= 4x resize
        full = exact(open_for_model(io.BytesIO(data_bytes), exact))
        fast = drafted(open_for_model(io.BytesIO(data_bytes), drafted))
        diffs.append(float((np.abs(fast - full) * std * 255).mean()))
        pair = engines["eager"].predict(np.stack([full, fast]))
        same += int(pair[0].argmax() == pair[1].argmax())
    draft = {"images": len(picks), "top1_agreement": same / len(picks), "mean_abs_diff_levels": float(np.mean(diffs))}
    labels = [label for _, label in valid]
    exact_inputs = exact.batch([open_rgb(p) for p, _ in valid])
    eager_top1 = np.concatenate(
        [engines["eager"].predict(exact_inputs[i : i + 32]).argmax(1) for i in range(0, len(valid), 32)]
    )
    distinct = len(set(eager_top1.tolist()))

    sizes = {"eager": record["eager"]["size_bytes"]}
    sizes |= {n: e["size_bytes"] for n, e in record["engines"].items() if "size_bytes" in e}
    base = float(np.percentile(timings["eager"], 50))
    base_request = float(np.percentile(timings["eager+torchvision (today)"], 50))
    rows = []
    print(f"\nthreads {threads}, runs {args.runs}, export {export_s:.0f} s; rejected: {record['rejected'] or 'none'}")
    print(f"devices: {devices}")
    print(f"{'path':34} {'p50 ms':>8} {'p95 ms':>8} {'x eager':>8} {'x today':>8}")
    for name, t in timings.items():
        p50, p95 = float(np.percentile(t, 50)), float(np.percentile(t, 95))
        ref = base if "+" not in name else base_request
        rows.append({"path": name, "p50_ms": p50, "p95_ms": p95})
        print(f"{name:34} {p50:8.2f} {p95:8.2f} {p50 / base:8.2f} {p50 / ref if '+' in name else 1.0:8.2f}")
    print(f"\neager predicts {distinct} distinct classes over {len(labels)} validation images")
    print("engine   agreement  accuracy  size MB")
    print(f"eager    {1:9.4f}  {record['eager']['accuracy']:8.4f}  {sizes['eager'] / 1e6:7.1f}")
    for name, entry in record["engines"].items():
        size_mb = entry.get("size_bytes", sizes["eager"]) / 1e6  # fp16 runs model.pt
        print(f"{name:8} {entry['agreement']:9.4f}  {entry['accuracy']:8.4f}  {size_mb:7.1f}")
    print(
        f"\ndraft mode on {draft['images']} 2048x1536 JPEGs: top-1 agreement {draft['top1_agreement']:.4f}, "
        f"mean |diff| {draft['mean_abs_diff_levels']:.2f} pixel levels"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "threads": threads,
        "device": args.device,
        "engine_devices": devices,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "export_seconds": export_s,
        "record": record,
        "latency": rows,
        "draft": draft,
        "eager_distinct_predictions": distinct,
        "sizes": sizes,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
