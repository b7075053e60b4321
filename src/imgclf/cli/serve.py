"""`imgclf serve`: serve a model directory over the SageMaker hosting contract (multi-model-server).

The flags override the environment's knobs (imgclf.serving.environment lists them); imgclf.serving.server runs
the server.
"""

from __future__ import annotations

import argparse

from imgclf.errors import UserError
from imgclf.serving.environment import ServerSettings
from imgclf.serving.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", help="Model artifact directory (default /opt/ml/model; MME: /opt/ml/models).")
    parser.add_argument("--port", type=int, help="HTTP port (default SAGEMAKER_BIND_TO_PORT or 8080).")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on (default 0.0.0.0).")
    parser.add_argument(
        "--workers",
        type=int,
        help="Worker processes (default: SAGEMAKER_MODEL_SERVER_WORKERS or "
        "the memory/CPU rule, one per GPU on GPU hosts).",
    )
    parser.add_argument("--batch-size", type=int, help="MMS micro-batch size (default IMGCLF_BATCH_SIZE or 1).")
    parser.add_argument("--max-batch-delay-ms", type=int, help="MMS micro-batch wait (default 10).")
    parser.add_argument("--multi-model", action="store_true", help="Multi-model endpoint (or SAGEMAKER_MULTI_MODEL).")


def run(args: argparse.Namespace) -> int:
    try:
        settings = ServerSettings.from_env(
            args.model_dir,
            args.port,
            host=args.host,
            workers=args.workers,
            batch_size=args.batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            multi_model=args.multi_model,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return serve(settings)
