"""Where an ONNX serving worker's start goes, step by step, each step timed in a fresh process.

    python benchmarks/worker_start_bench.py MODEL_DIR [--engines onnx int8] [--repeats 2]

The steps an MMS worker takes before it reports ready (imgclf.serving.handler.initialize), in order: import
imgclf.serving.handler_service, verify the artifact's checksums (model.pt + index), the ONNX file's sha256, import
onnxruntime, create the session, the warm-up forward (then a second forward for comparison). The engines alternate,
repeat by repeat; torch must never be imported. The rest of `imgclf serve`'s start (its own process, the JVM
front-end, MMS spawning workers) is read from the server log's timestamps (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

STEPS = r"""
import sys, time
t0 = time.perf_counter()
import imgclf.serving.handler_service  # noqa: F401
t1 = time.perf_counter()
from pathlib import Path
import numpy as np
from imgclf.artifact import verify_files
from imgclf.checksums import sha256_file
from imgclf.serving import engines
model, name = Path(sys.argv[1]), sys.argv[2]
t2 = time.perf_counter(); verify_files(model); t3 = time.perf_counter()
path = model / engines.read_record(model)["engines"][name]["file"]
sha256_file(path); t4 = time.perf_counter()
import onnxruntime  # noqa: F401
t5 = time.perf_counter()
engine = engines.OnnxEngine.load(path, name, threads=1); t6 = time.perf_counter()
x = np.zeros((1, 3, 224, 224), np.float32)
engine.predict(x); t7 = time.perf_counter()
engine.predict(x); t8 = time.perf_counter()
print(f"{name}: import handler_service {t1 - t0:.2f} s | verify_files {t3 - t2:.2f} s | sha256 {path.name} "
      f"{t4 - t3:.2f} s | import onnxruntime {t5 - t4:.2f} s | session {t6 - t5:.2f} s | warm-up forward "
      f"{t7 - t6:.2f} s | next forward {t8 - t7:.3f} s | torch imported: {'torch' in sys.modules}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--engines", nargs="+", default=["onnx", "int8"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.repeats):
        for name in args.engines:
            subprocess.run([sys.executable, "-c", STEPS, args.model_dir, name], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
