"""Serving, side by side in one run: in-process floor vs `imgclf serve` vs the seed-style server.

    (a) floor   decode + preprocess + forward of the same JPEG in this process (imgclf.model.load_artifact,
                imgclf.data.eval_transform): the work a server wraps, no HTTP.
    (b) imgclf  `imgclf serve --model-dir D --port P` with its defaults (imgclf_batch: --batch-size 8
                --max-batch-delay-ms 10, server-side micro-batching, for the throughput table).
    (c) seed    the seeds' inference.py (model_fn/input_fn/predict_fn/output_fn) on sagemaker-inference's default
                handler service under multi-model-server, with the toolkit's defaults (benchmarks/seed_server/).

Same artifact (ResNet-18, 10 classes, 224 px; random weights unless --artifact), same 224 px JPEG, one client
on one keep-alive connection for latency; then closed-loop throughput at 1, 4, 8, 16 clients (loopback only,
bounded in time); cold start (process start -> first 200 /ping, -> first correct prediction); RSS per worker.
Servers run one at a time (MMS refuses to start beside another MMS on the host).

    python benchmarks/serve_bench.py --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
from train_bench import cpu_name  # noqa: E402

from imgclf.artifact import ModelMeta, load_artifact, save_artifact  # noqa: E402
from imgclf.images import eval_transform  # noqa: E402
from imgclf.model import build_model  # noqa: E402
from imgclf.sample_data import load_digits  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def progress(msg: str) -> None:
    print(f"[serve_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_artifact(out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, "none")
    save_artifact(model, ModelMeta.for_training("resnet18", 10, 224), [str(i) for i in range(10)], out)
    return out


def make_jpeg(seed: int) -> bytes:
    """A 224x224 RGB JPEG of a sample digit (upscaled): a realistic decode cost, a deterministic answer."""
    images, _ = load_digits()
    img = Image.fromarray(images[seed % len(images)], mode="L").resize((224, 224), Image.BILINEAR).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def floor(artifact_dir: Path, jpeg: bytes, n: int) -> tuple[dict, int]:
    """(latency summary, predicted class index) for decode + preprocess + forward in-process.

    Measured with 1 torch thread and with the default thread count; the faster p50 is the floor (a server
    worker on 2 cores with 2 workers runs 1 thread; oversubscribed OpenMP threads are slow on a busy machine).
    """
    best = None
    default_threads = torch.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            summary, index = _floor_once(artifact_dir, jpeg, n)
            summary["torch_threads"] = threads
            if best is None or summary["p50_ms"] < best[0]["p50_ms"]:
                best = (summary, index)
    finally:
        torch.set_num_threads(default_threads)
    return best


def _floor_once(artifact_dir: Path, jpeg: bytes, n: int) -> tuple[dict, int]:
    art = load_artifact(artifact_dir)
    transform = eval_transform(art.meta)

    def once() -> torch.Tensor:
        with Image.open(io.BytesIO(jpeg)) as img:
            x = transform(img.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            return art.model(x)

    for _ in range(5):
        logits = once()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        lat.append(time.perf_counter() - t)
    return loadgen.summary_ms(lat), int(logits.argmax(1))


def top1(kind: str, body: bytes) -> str | None:
    """The predicted class name (imgclf) or index as a string (seed: raw logits list) from a response body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if kind == "seed":
        row = doc[0] if doc and isinstance(doc[0], list) else doc
        return str(max(range(len(row)), key=row.__getitem__))
    if isinstance(doc, dict):
        for key in ("predictions", "top_k", "topk", "results"):
            if key in doc:
                doc = doc[key]
                break
    if isinstance(doc, list) and doc and isinstance(doc[0], list):
        doc = doc[0]
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        first = doc[0]
        for key in ("label", "class", "name", "class_name"):
            if key in first:
                return str(first[key])
    if isinstance(doc, dict) and doc:  # {"label": prob, ...}
        return str(max(doc, key=doc.get))
    return None


def server_cmd(kind: str, artifact: Path, port: int) -> list[str]:
    if kind.startswith("imgclf"):
        cmd = [str(BIN / "imgclf"), "serve", "--model-dir", str(artifact), "--port", str(port), "--host", "127.0.0.1"]
        if kind == "imgclf_batch":  # server-side micro-batching (MMS batch_size / max_batch_delay)
            cmd += ["--batch-size", "8", "--max-batch-delay-ms", "10"]
        return cmd
    return [sys.executable, str(HERE / "seed_server" / "start.py"), "--artifact", str(artifact), "--port", str(port)]


def bench_server(kind: str, args, artifact: Path, jpeg: bytes, expected: str, work: Path) -> dict:
    loadgen.wait_for_no_mms(args.mms_wait_s, log=progress)
    port = loadgen.free_port()
    log_path = work / f"{kind}-{port}.log"
    t0 = time.perf_counter()
    proc = loadgen.start_server(server_cmd(kind, artifact, port), str(log_path))
    out: dict = {"kind": kind, "log": str(log_path)}
    try:
        # Cold start: poll /ping, then send the JPEG until the answer is right.
        first_ping = first_pred = None
        client = loadgen.Client(port, timeout=30)
        deadline = t0 + args.start_timeout_s
        while time.perf_counter() < deadline and proc.poll() is None:
            if first_ping is None:
                if loadgen.ping(port, timeout=2) == 200:
                    first_ping = time.perf_counter() - t0
                    progress(f"{kind}: /ping 200 after {first_ping:.2f}s")
                else:
                    time.sleep(0.05)
                    continue
            try:
                status, body = client.request("POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"})
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200 and top1(kind, body) == expected:
                first_pred = time.perf_counter() - t0
                progress(f"{kind}: first correct prediction after {first_pred:.2f}s")
                break
            out.setdefault("early_answers", []).append([status, body[:200].decode(errors="replace")])
            time.sleep(0.05)
        client.close()
        if first_pred is None:
            raise RuntimeError(f"{kind} never answered correctly (exit {proc.poll()}); log: {log_path}")
        out["cold_start_s"] = {"ping_200": first_ping, "first_correct_prediction": first_pred}

        lat, bad = loadgen.sequential_latency(port, jpeg, args.requests)
        out["latency"] = {**loadgen.summary_ms(lat), "non_200": bad}
        progress(f"{kind}: sequential p50 {out['latency']['p50_ms']:.1f} ms p99 {out['latency']['p99_ms']:.1f} ms")
        out["rss_after_latency"] = loadgen.process_tree_rss(proc.pid)

        out["throughput"] = {}
        for c in args.concurrency:
            res = loadgen.run_load(port, jpeg, concurrency=c, duration_s=args.load_seconds)
            d = res.as_dict()
            out["throughput"][str(c)] = d
            progress(
                f"{kind}: {c} clients: {d['throughput_rps']:.1f} req/s, p50 {d['p50_ms']:.0f} ms, "
                f"p99 {d['p99_ms']:.0f} ms, non-200 {d['requests'] - d['ok']}, errors {d['errors']}"
            )
        out["rss_after_load"] = loadgen.process_tree_rss(proc.pid)
        out["workers"] = len(out["rss_after_load"]["workers_mb"])
    finally:
        loadgen.stop_server(proc)
    return out


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for r in runs:
        v = r
        for p in path:
            v = v[p]
        values.append(v)
    return statistics.median(values)


def summarise(result: dict, concurrency: list[int]) -> dict:
    f = median_of(result["floor"], "p50_ms")
    s = result["servers"]
    out: dict = {"floor_p50_ms": f}
    for kind, runs in s.items():
        if not runs:
            continue
        out[f"{kind}_p50_ms"] = median_of(runs, "latency", "p50_ms")
        out[f"{kind}_p99_ms"] = median_of(runs, "latency", "p99_ms")
        for c in concurrency:
            out[f"{kind}_rps_{c}"] = median_of(runs, "throughput", str(c), "throughput_rps")
    ratios = {}
    if s.get("imgclf"):
        ratios["imgclf_p50_over_floor"] = out["imgclf_p50_ms"] / f
    if s.get("seed"):
        ratios["seed_p50_over_floor"] = out["seed_p50_ms"] / f
    if s.get("imgclf") and s.get("seed"):
        ratios["imgclf_p50_over_seed"] = out["imgclf_p50_ms"] / out["seed_p50_ms"]
    for kind in ("imgclf", "imgclf_batch"):
        if s.get(kind) and s.get("seed"):
            for c in concurrency:
                if out[f"seed_rps_{c}"]:
                    ratios[f"{kind}_over_seed_throughput_{c}"] = out[f"{kind}_rps_{c}"] / out[f"seed_rps_{c}"]
    return {"median": out, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    parser.add_argument("--artifact", type=Path, help="an imgclf model dir (default: generated ResNet-18, 224 px)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per server for p50/95/99")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--load-seconds", type=float, default=8.0, help="per concurrency level")
    parser.add_argument("--rounds", type=int, default=1, help="floor, imgclf, seed repeated (interleaved)")
    parser.add_argument("--servers", default="imgclf,seed,imgclf_batch")
    parser.add_argument("--start-timeout-s", type=float, default=120)
    parser.add_argument("--mms-wait-s", type=float, default=600, help="wait this long for another MMS to exit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on kill
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]

    work = Path(tempfile.mkdtemp(prefix="imgclf-serve-bench-"))
    try:
        artifact = args.artifact or make_artifact(work / "model", args.seed)
        jpeg = make_jpeg(args.seed)
        names = json.loads((artifact / "index_to_name.json").read_text())
        result: dict = {
            "benchmark": "serve",
            "environment": {
                "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "host": platform.node(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "cpus": os.cpu_count(),
                "device_name": cpu_name(),
                "load_average_at_start": os.getloadavg(),
            },
            "settings": {
                "jpeg_bytes": len(jpeg),
                "requests": args.requests,
                "concurrency": args.concurrency,
                "load_seconds": args.load_seconds,
                "rounds": args.rounds,
            },
            "floor": [],
            "servers": {s: [] for s in servers},
        }
        for r in range(args.rounds):
            progress(f"round {r + 1}/{args.rounds}: in-process floor")
            summary, index = floor(artifact, jpeg, args.requests)
            result["floor"].append(summary)
            progress(f"floor p50 {summary['p50_ms']:.1f} ms p99 {summary['p99_ms']:.1f} ms")
            for kind in servers:
                expected = names[str(index)] if kind.startswith("imgclf") else str(index)
                progress(f"round {r + 1}/{args.rounds}: {kind}")
                result["servers"][kind].append(bench_server(kind, args, artifact, jpeg, expected, work))
        progress("in-process floor again, after the servers")
        result["floor"].append(floor(artifact, jpeg, args.requests)[0])
        result.update(summarise(result, args.concurrency))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        progress(f"wrote {args.out}")
        for k, v in {**result["median"], **result["ratios"]}.items():
            print(f"{k}: {v:.3f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
