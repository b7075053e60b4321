"""Served engines side by side, and the two serve images' size and cold start.

    python benchmarks/engine_serve_bench.py --model-dir DIR [--rounds 2] [--seconds 10]
    python benchmarks/engine_serve_bench.py --model-dir DIR --images imgclf-serve:latest imgclf-serve:cpu-latest

DIR is an exported model (`imgclf export`, or trained with export-engines on); without --model-dir a ResNet-18 at
224 px (random init: the engines' cost does not depend on the weights) is built and exported on the digits sample.

On a GPU machine the export runs on CUDA (fp16 validated, engines timed there) and `imgclf serve` puts one worker
on each GPU, so the same command measures the GPU engines; "auto" in the output says what auto picks on cpu / cuda.

Engines: `imgclf serve` (default workers) with IMGCLF_ENGINE=eager, fp16, onnx, int8 in turn, one server at a time, the
engines interleaved round by round so that a busy machine slows them alike; per engine the median over rounds of
p50/p95 latency with 1 client (sequential requests, one 224 px JPEG) and req/s with 1 and 8 clients (closed loop,
--seconds each). Agreement with eager and the file size come from the export record in imgclf.json.

Images (--images): `docker image inspect` size, and cold start = `docker run` -> the first correct answer to a
JPEG (the top-1 the eager model gives in this process), median of --cold-starts runs per image, alternating.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

import loadgen  # noqa: E402
from support import VENV_BIN  # noqa: E402

ENGINES = ("eager", "fp16", "onnx", "int8")  # fp16 only where the export validated it (on a GPU)


def exported_sample_model(work: Path) -> Path:
    from engine_bench import sample_model

    from imgclf.export import export_engines
    from imgclf.sample_data import write_sample_data

    data = work / "data"
    write_sample_data(data)
    model = work / "model"
    sample_model(model, data, epochs=0)
    export_engines(model, data / "valid", data / "train", max_valid=200, calibration_images=100)
    return model


def jpeg(model_dir: Path, work: Path) -> tuple[bytes, str]:
    """A sample digit as a 256 px JPEG and the eager model's top-1 label for it (what every engine and image
    must answer: a real image, not noise, whose top-1 is not a near tie)."""
    import torch
    from PIL import Image

    from imgclf.artifact import load_artifact
    from imgclf.images import eval_transform
    from imgclf.sample_data import write_sample_data

    write_sample_data(work / "jpeg-source")
    first = sorted((work / "jpeg-source" / "test").glob("*/*"))[0]
    buf = io.BytesIO()
    Image.open(first).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
    artifact = load_artifact(model_dir, "cpu")
    x = eval_transform(artifact.meta)(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[None]
    with torch.inference_mode():
        top1 = int(artifact.model(x).argmax())
    return buf.getvalue(), artifact.index_to_name[top1]


def serve_engine(model_dir: Path, engine: str, body: bytes, seconds: float, work: Path) -> dict:
    port = loadgen.free_port()
    cmd = [str(VENV_BIN / "imgclf"), "serve", "--model-dir", str(model_dir), "--port", str(port)]
    cmd += ["--host", "127.0.0.1"]
    proc = loadgen.start_server(cmd, str(work / f"serve-{engine}.log"), env={"IMGCLF_ENGINE": engine})
    try:
        deadline = time.monotonic() + 600
        while loadgen.ping(port) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{engine}: server did not start; see {work}/serve-{engine}.log")
            time.sleep(0.2)
        latencies, bad = loadgen.sequential_latency(port, body, 50)
        one = loadgen.run_load(port, body, concurrency=1, duration_s=seconds)
        eight = loadgen.run_load(port, body, concurrency=8, duration_s=seconds)
        errors = bad + sum(n for s, n in one.statuses.items() if s != 200) + sum(eight.errors.values())
        errors += sum(n for s, n in eight.statuses.items() if s != 200)
        return {
            "p50_ms": loadgen.percentile(latencies, 50) * 1000,
            "p95_ms": loadgen.percentile(latencies, 95) * 1000,
            "rps_1": len(one.latencies) / one.seconds,
            "rps_8": len(eight.latencies) / eight.seconds,
            "errors": errors,
        }
    finally:
        loadgen.stop_server(proc)


def engine_table(model_dir: Path, body: bytes, rounds: int, seconds: float, work: Path) -> list[dict]:
    record = json.loads((model_dir / "imgclf.json").read_text()).get("export", {})
    kept = [e for e in ENGINES if e == "eager" or e in record.get("engines", {})]
    runs: dict[str, list[dict]] = {e: [] for e in kept}
    for r in range(rounds):
        for engine in kept:
            runs[engine].append(serve_engine(model_dir, engine, body, seconds, work))
            print(f"round {r + 1}: {engine} {runs[engine][-1]}", file=sys.stderr, flush=True)
    rows = []
    for engine in kept:
        entry = record.get("engines", {}).get(engine) or record.get("eager", {})
        row = {"engine": engine}
        for key in ("p50_ms", "p95_ms", "rps_1", "rps_8"):
            row[key] = round(statistics.median(run[key] for run in runs[engine]), 2)
        row["errors"] = sum(run["errors"] for run in runs[engine])
        row["agreement"] = 1.0 if engine == "eager" else entry.get("agreement")
        row["accuracy"] = entry.get("accuracy")
        row["size_mb"] = round(entry.get("size_bytes", record.get("eager", {}).get("size_bytes", 0)) / 1e6, 1)
        row["export_cuda_p50_ms"] = entry.get("cuda_p50_ms")  # the export's batch-1 forward on CUDA, if timed
        rows.append(row)
    eager_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["p50_vs_eager"] = round(row["p50_ms"] / eager_p50, 2)
    return rows


def cold_starts(images: list[str], model_dir: Path, body: bytes, expected: str, n: int) -> list[dict]:
    from support import containers as sm

    times: dict[str, list[float]] = {image: [] for image in images}
    for _ in range(n):
        for image in images:
            started = time.monotonic()
            with sm.serve(model_dir, image, startup_timeout=600) as server:
                status, payload = server.invoke(body, "image/jpeg")
                answer = json.loads(payload)["predictions"][0][0]["label"] if status == 200 else None
                assert answer == expected, (image, status, payload[:300])
                times[image].append(time.monotonic() - started)
    out = []
    for image in images:
        size = int(sm.docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())
        out.append(
            {"image": image, "size_mb": round(size / 1e6), "cold_start_s": round(statistics.median(times[image]), 1)}
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="An exported model (default: build and export one).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="Closed-loop seconds per client count.")
    parser.add_argument("--images", nargs="*", default=[], help="Serve images to size and cold-start.")
    parser.add_argument("--cold-starts", type=int, default=2)
    parser.add_argument("--skip-engines", action="store_true", help="Only the images.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_serve.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgclf-engine-serve-"))
    model_dir = args.model_dir or exported_sample_model(work)
    body, expected = jpeg(model_dir, work)
    result: dict = {"model_dir": str(model_dir), "cpus": os.cpu_count()}
    if not args.skip_engines:
        from imgclf.serving.engines import choose_engine, read_record

        record = read_record(model_dir)
        result["auto"] = {device: choose_engine("auto", record, device) for device in ("cpu", "cuda")}
        result["engines"] = engine_table(model_dir, body, args.rounds, args.seconds, work)
    if args.images:
        result["images"] = cold_starts(args.images, model_dir, body, expected, args.cold_starts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
