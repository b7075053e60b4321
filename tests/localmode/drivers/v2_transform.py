"""SDK v2: batch Transformer in local mode over a folder of JPEGs (one request per file)."""

from __future__ import annotations

import time
from pathlib import Path

from _common import emit, load_args

from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.target import file_uri, resolve_target

args = load_args()
target = resolve_target(local=True, workdir=args["workdir"])
model = sdk_v2.build_model(target, args["model_tar"], image_uri=args["image"])
output = Path(args["output"])
transformer = sdk_v2.build_transformer(model, instance_type="local", output_path=file_uri(output))
started = time.monotonic()
sdk_v2.run_transform(transformer, file_uri(args["input"]), local=True)
emit(
    {
        "seconds": time.monotonic() - started,
        "outputs": {p.name: p.read_text() for p in sorted(output.rglob("*")) if p.is_file()},
    }
)
