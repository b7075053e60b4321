"""Served engines side by side, and the two serve images' size and cold start.

    python benchmarks/engine_serve_bench.py --model-dir DIR [--rounds 2] [--seconds 10]
    python benchmarks/engine_serve_bench.py --targets [--rounds 1] [--seconds 8]
    python benchmarks/engine_serve_bench.py --model-dir DIR --images imgclf-serve:latest imgclf-serve:cpu-latest

DIR is an exported model (`imgclf export`, or trained with export-engines on); without --model-dir a ResNet-18 at
224 px (random init: the engines' cost does not depend on the weights) is built and exported on the digits sample.

On a GPU machine the export runs on CUDA (fp16 validated, engines timed there) and `imgclf serve` puts one worker
on each GPU, so the same command measures the GPU engines; "auto" in the output says what auto picks on cpu / cuda.

Engines: `imgclf serve` (default workers) with IMGCLF_ENGINE=eager, fp16, onnx, int8 in turn, one server at a time, the
engines interleaved round by round so that a busy machine slows them alike; per engine the median over rounds of
p50/p95 latency with 1 client (sequential requests, one 224 px JPEG) and req/s with 1 and 8 clients (closed loop,
--seconds each). Agreement with eager and the file size come from the export record in imgclf.json.

--targets: issue 13's targets measured in one run, round by round: the in-process floors (this process, the
faster of 1 thread and all CPUs, as serve_bench.py's floor: eager = decode + torchvision transform + forward of
the same JPEG, the floor the target names; onnx / int8 = decode + numpy preprocess + forward; and each forward
alone on the preprocessed tensor, for reference), then each engine under `imgclf serve` and the seed-style server
(benchmarks/seed_server) at 1 and 8 clients, each server's start -> /ping 200 -> first correct answer, and the
floors again after the servers. Printed: served p50 / eager floor p50 per engine (target <= 0.8, agreement >=
99.5 %), best served req/s at 8 clients / seed-style req/s at 8 (target >= 1.5), and every server's error count.

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


def exported_sample_model(work: Path, epochs: int = 0) -> Path:
    from engine_bench import sample_model

    from imgclf.export import export_engines
    from imgclf.sample_data import write_sample_data

    data = work / "data"
    write_sample_data(data)
    model = work / "model"
    sample_model(model, data, epochs=epochs)
    export_engines(model, data / "valid", data / "train", max_valid=200, calibration_images=100)
    return model


def jpeg(model_dir: Path, work: Path) -> tuple[bytes, str, int]:
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
    return buf.getvalue(), artifact.index_to_name[top1], top1


def server_command(kind: str, model_dir: Path, port: int) -> list[str]:
    if kind == "seed":
        return [sys.executable, str(REPO / "benchmarks" / "seed_server" / "start.py"), "--artifact", str(model_dir),
                "--port", str(port)]  # fmt: skip
    cmd = [str(VENV_BIN / "imgclf"), "serve", "--model-dir", str(model_dir), "--port", str(port)]
    return cmd + ["--host", "127.0.0.1"]


def answer_is(kind: str, payload: bytes, expected: tuple[str, int]) -> bool:
    """The response's top-1 is the expected (label, index): imgclf answers labels, the seed-style raw logits."""
    try:
        doc = json.loads(payload)
        if kind == "seed":
            row = doc[0] if isinstance(doc[0], list) else doc
            return max(range(len(row)), key=row.__getitem__) == expected[1]
        return doc["predictions"][0][0]["label"] == expected[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def serve_engine(
    model_dir: Path, engine: str, body: bytes, seconds: float, work: Path, expected: tuple[str, int] | None = None,
    requests: int = 50,
) -> dict:  # fmt: skip
    """One server (`engine`: an IMGCLF_ENGINE value under `imgclf serve`, or "seed"): start times, p50/p95 of
    `requests` sequential requests, req/s at 1 and 8 clients, every non-200 and connection error counted."""
    loadgen.wait_for_no_mms(600, log=lambda m: print(m, file=sys.stderr, flush=True))  # MMS refuses to share
    port = loadgen.free_port()
    log_path = work / f"serve-{engine}-{port}.log"
    env = {} if engine == "seed" else {"IMGCLF_ENGINE": engine}
    started = time.monotonic()
    proc = loadgen.start_server(server_command(engine, model_dir, port), str(log_path), env=env)
    try:
        deadline = started + 600
        while loadgen.ping(port, timeout=1) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{engine}: server did not start; see {log_path}")
            time.sleep(0.05)
        ping_s = time.monotonic() - started
        first_s = None
        if expected is not None:
            client = loadgen.Client(port, timeout=60)
            while time.monotonic() < deadline:
                status, payload = client.request("POST", "/invocations", body, {"Content-Type": "image/jpeg"})
                if status == 200 and answer_is(engine, payload, expected):
                    first_s = time.monotonic() - started
                    break
                time.sleep(0.05)
            client.close()
            if first_s is None:
                raise RuntimeError(f"{engine}: never answered {expected}; see {log_path}")
        latencies, bad = loadgen.sequential_latency(port, body, requests)
        one = loadgen.run_load(port, body, concurrency=1, duration_s=seconds)
        eight = loadgen.run_load(port, body, concurrency=8, duration_s=seconds)
        errors = bad + sum(one.errors.values()) + sum(eight.errors.values())
        errors += sum(n for s, n in (one.statuses + eight.statuses).items() if s != 200)
        return {
            "p50_ms": loadgen.percentile(latencies, 50) * 1000,
            "p95_ms": loadgen.percentile(latencies, 95) * 1000,
            "rps_1": len(one.latencies) / one.seconds,
            "rps_8": len(eight.latencies) / eight.seconds,
            "errors": errors,
            "ping_200_s": ping_s,
            "first_correct_s": first_s,
            "worker_load_s": worker_load_seconds(log_path),
        }
    finally:
        loadgen.stop_server(proc)


def worker_load_seconds(log_path: Path) -> list[float]:
    """The handler's own "Loaded ... in X s" (verify, load the engine, warm up) per worker, from the server log."""
    import re

    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [float(x) for x in re.findall(r"Loaded .* in ([0-9.]+) s", text)]


def p50_ms(fn, n: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return loadgen.percentile(times, 50) * 1000


def in_process_floors(model_dir: Path, body: bytes, kept: list[str], n: int) -> dict[str, float]:
    """p50 ms in this process, per path the faster of 1 thread and all CPUs (a busy 2-core machine can favour
    either): `eager` is serve_bench.py's floor (decode + torchvision transform + forward), `onnx`/`int8` the same
    request through numpy preprocessing, `*_forward` the forward alone on the preprocessed (1, 3, S, S) tensor."""
    import numpy as np
    import torch
    from PIL import Image
    from serve_bench import floor

    from imgclf.artifact import load_artifact
    from imgclf.images import eval_transform
    from imgclf.serving.engines import OnnxEngine
    from imgclf.serving.preprocess import Preprocessing, Preprocessor
    from imgclf.system import cpu_count

    out = {"eager": floor(model_dir, body, n)[0]["p50_ms"]}
    artifact = load_artifact(model_dir, "cpu")
    x = eval_transform(artifact.meta)(Image.open(io.BytesIO(body)).convert("RGB"))[None]
    prep = Preprocessor(Preprocessing.from_meta(artifact.meta), draft=False)
    threads = sorted({1, cpu_count()})
    default_threads = torch.get_num_threads()

    def eager_forward():
        with torch.inference_mode():
            artifact.model(x)

    try:
        forward = []
        for t in threads:
            torch.set_num_threads(t)
            forward.append(p50_ms(eager_forward, n))
        out["eager_forward"] = min(forward)
    finally:
        torch.set_num_threads(default_threads)
    record = json.loads((model_dir / "imgclf.json").read_text()).get("export", {})
    tensor = x.numpy()
    for name in kept:
        if name == "eager":
            continue
        request, forward = [], []
        for t in threads:
            engine = OnnxEngine.load(model_dir / record["engines"][name]["file"], name, threads=t)
            request.append(
                p50_ms(lambda e=engine: e.predict(prep(Image.open(io.BytesIO(body)).convert("RGB"))[None]), n)
            )
            forward.append(p50_ms(lambda e=engine: e.predict(np.ascontiguousarray(tensor)), n))
        out[name], out[f"{name}_forward"] = min(request), min(forward)
    return out


def targets(model_dir: Path, body: bytes, expected: tuple[str, int], args, work: Path) -> dict:
    """Issue 13's targets in one run: floors, every kept engine served, the seed-style server, floors again."""
    record = json.loads((model_dir / "imgclf.json").read_text()).get("export", {})
    kept = [e for e in ENGINES if e == "eager" or e in record.get("engines", {})]
    servers = [*kept, "seed"]
    floors: list[dict] = []
    runs: dict[str, list[dict]] = {s: [] for s in servers}
    for r in range(args.rounds):
        floors.append(in_process_floors(model_dir, body, kept, args.floor_requests))
        print(f"round {r + 1}: floors {floors[-1]}", file=sys.stderr, flush=True)
        for kind in servers:
            runs[kind].append(serve_engine(model_dir, kind, body, args.seconds, work, expected, args.requests))
            print(f"round {r + 1}: {kind} {runs[kind][-1]}", file=sys.stderr, flush=True)
    floors.append(in_process_floors(model_dir, body, kept, args.floor_requests))
    print(f"after the servers: floors {floors[-1]}", file=sys.stderr, flush=True)
    floor = {k: round(statistics.median(f[k] for f in floors), 2) for k in floors[0]}
    rows = {}
    for kind in servers:
        row = {k: round(statistics.median(run[k] for run in runs[kind]), 2)
               for k in ("p50_ms", "p95_ms", "rps_1", "rps_8", "ping_200_s", "first_correct_s")}  # fmt: skip
        row["errors"] = sum(run["errors"] for run in runs[kind])
        row["worker_load_s"] = [x for run in runs[kind] for x in run["worker_load_s"]]
        if kind != "seed":
            entry = record.get("engines", {}).get(kind) or record.get("eager", {})
            row["agreement"] = 1.0 if kind == "eager" else entry.get("agreement")
            row["accuracy"] = entry.get("accuracy")
            row["size_mb"] = round(entry.get("size_bytes", 0) / 1e6, 1)
            row["p50_over_eager_floor"] = round(row["p50_ms"] / floor["eager"], 3)
        rows[kind] = row
    best = max(kept, key=lambda k: rows[k]["rps_8"])
    ratios = {f"{k}_p50_over_eager_floor": rows[k]["p50_over_eager_floor"] for k in kept}
    ratios[f"best_rps8_over_seed_rps8 ({best})"] = round(rows[best]["rps_8"] / rows["seed"]["rps_8"], 3)
    return {
        "floors_p50_ms": floor,
        "floor_runs": floors,
        "servers": rows,
        "ratios": ratios,
        "rejected": record.get("rejected"),
        "errors": {k: rows[k]["errors"] for k in servers},
    }


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
    parser.add_argument("--targets", action="store_true", help="Floors, engines and the seed-style server.")
    parser.add_argument("--requests", type=int, default=50, help="Sequential requests per server (--targets).")
    parser.add_argument("--floor-requests", type=int, default=50, help="Timed calls per in-process floor.")
    parser.add_argument("--epochs", type=int, default=0, help="Train the sample model first (0: random init).")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_serve.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgclf-engine-serve-"))
    model_dir = args.model_dir or exported_sample_model(work, args.epochs)
    body, expected, expected_index = jpeg(model_dir, work)
    result: dict = {
        "model_dir": str(model_dir),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
    }
    if args.targets:
        result["targets"] = targets(model_dir, body, (expected, expected_index), args, work)
        for name, value in result["targets"]["ratios"].items():
            print(f"{name}: {value}")
        print(f"errors: {result['targets']['errors']}")
    elif not args.skip_engines:
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
