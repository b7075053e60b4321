"""`imgclf demo`: a web page for a model (needs the `demo` extra: pip install 'imgclf[demo]').

imgclf demo --model-dir ml/model                  in-process
imgclf demo --endpoint-url http://localhost:8080  a running `imgclf serve`
imgclf demo --endpoint-name my-endpoint           a SageMaker endpoint
[--host 127.0.0.1] [--port 7860] [--top-k 5] [--examples DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from imgclf.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", help="A trained model directory, answered in this process.")
    target.add_argument("--endpoint-url", help="A running server's base URL, e.g. http://localhost:8080.")
    target.add_argument("--endpoint-name", help="A SageMaker endpoint name (boto3 sagemaker-runtime).")
    parser.add_argument("--region", help="AWS region for --endpoint-name (default: the AWS config's).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    parser.add_argument("--top-k", type=int, default=5, help="Classes in the bar chart (default 5).")
    parser.add_argument(
        "--examples", type=Path, help="A folder of example images (default: the embedded sample's test images)."
    )


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UserError("imgclf demo needs the demo extra: pip install 'imgclf[demo]'.")
    if args.top_k < 1:
        raise UserError("--top-k must be at least 1.")
    from imgclf import demo

    if args.model_dir:
        backend = demo.LocalBackend(args.model_dir)
    else:
        backend = demo.RemoteBackend(url=args.endpoint_url, endpoint=args.endpoint_name, region=args.region)
    if args.examples:
        examples, allowed = demo.folder_examples(args.examples), [str(args.examples)]
    else:
        folder = demo.examples_dir()
        examples, allowed = demo.sample_examples(folder), [str(folder)]
    print(f"imgclf demo: {backend.description} on http://{args.host}:{args.port}", flush=True)
    demo.launch(demo.build_app(backend, examples, args.top_k), args.host, args.port, allowed)
    return 0
