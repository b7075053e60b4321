"""SDK v2: batch Transformer in local mode over a folder of JPEGs (one request per file)."""

from __future__ import annotations

import time
from pathlib import Path

from _common import emit, load_args

from imgclf import launch

args = load_args()
target = launch.resolve_target(local=True, workdir=args["workdir"])
model = launch.build_model(target, args["model_tar"], image_uri=args["image"])
output = Path(args["output"])
transformer = launch.build_transformer(model, instance_type="local", output_path=launch.file_uri(output))
started = time.monotonic()
launch.run_transform(transformer, launch.file_uri(args["input"]), local=True)
emit(
    {
        "seconds": time.monotonic() - started,
        "outputs": {p.name: p.read_text() for p in sorted(output.rglob("*")) if p.is_file()},
    }
)
