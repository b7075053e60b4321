"""The MMS front-end's JIT, side by side: the serve image started with the old default JVM options (C1 + C2) and
with the current one (C1 only, `-XX:TieredStopAtLevel=1`), alternating, N rounds.

Per start: docker run -> first 200 answer to a 256 px JPEG (the cold start the issue times), then req/s over
`--seconds` with 8 concurrent clients and the errors. Prints the medians and the ratios current / old.

    python benchmarks/frontend_jit_bench.py --model-dir M --image imgclf-serve:cpu-latest --rounds 4
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import loadgen  # noqa: E402

from imgclf.serving.environment import DEFAULT_VMARGS  # noqa: E402

VARIANTS = {"c1+c2 (old default)": "-XX:-UseContainerSupport", "c1 only (default)": DEFAULT_VMARGS}
CLIENTS = 8


def jpeg_256() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def one_start(image: str, model_dir: Path, vmargs: str, body: bytes, seconds: float) -> dict:
    port = loadgen.free_port()
    name = f"imgclf-jit-bench-{port}"
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/opt/ml/model:ro",
         "-e", f"SAGEMAKER_MODEL_SERVER_VMARGS={vmargs}", image, "serve"],
        check=True, capture_output=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/invocations"

    def post() -> int:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status

    try:
        while True:
            try:
                if post() == 200:
                    break
            except OSError:
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"{name}: no answer in 300 s") from None
                time.sleep(0.05)
        cold = time.monotonic() - started
        counts = {"ok": 0, "errors": 0}
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def client() -> None:
            while time.monotonic() < stop:
                try:
                    key = "ok" if post() == 200 else "errors"
                except OSError:
                    key = "errors"
                with lock:
                    counts[key] += 1

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"cold_start_s": round(cold, 3), "req_per_s_8": round(counts["ok"] / seconds, 2), **counts}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="an exported model directory")
    parser.add_argument("--image", default="imgclf-serve:cpu-latest")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "frontend_jit.json")
    args = parser.parse_args()
    body = jpeg_256()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, vmargs in VARIANTS.items():
            runs[name].append(one_start(args.image, args.model_dir.resolve(), vmargs, body, args.seconds))
            print(name, runs[name][-1], flush=True)
    summary = {
        name: {
            "cold_start_s": statistics.median(r["cold_start_s"] for r in rows),
            "req_per_s_8": statistics.median(r["req_per_s_8"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
        }
        for name, rows in runs.items()
    }
    old, new = (summary[name] for name in VARIANTS)
    ratios = {
        "cold_start_current_over_old": round(new["cold_start_s"] / old["cold_start_s"], 2),
        "req_per_s_8_current_over_old": round(new["req_per_s_8"] / old["req_per_s_8"], 2),
    }
    for name, row in summary.items():
        cold, rate = row["cold_start_s"], row["req_per_s_8"]
        print(f"{name}: cold start {cold:.2f} s, {rate:.1f} req/s at 8, {row['errors']} errors")
    print(ratios)
    result = {"image": args.image, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_average": os.getloadavg(),
              "variants": VARIANTS, "runs": runs, "summary": summary, "ratios": ratios}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
