"""`imgclf predict`: classify images with a running endpoint (a local `imgclf serve` URL or a SageMaker endpoint).

    imgclf predict dog.jpg cat.png --endpoint-url http://localhost:8080 [--top-k 3] [--json]
    imgclf predict dog.jpg --endpoint-name my-endpoint [--region us-east-1]
    imgclf predict big.png --endpoint-name my-async-endpoint --async [--async-input s3://B/in] [--async-timeout 900]
    imgclf predict dog.jpg --endpoint-url http://localhost:8080 --custom-attributes explain=gradcam --json

imgclf.client does the requests (imgclf.async_client for --async: upload to S3, InvokeEndpointAsync, a progress
line on stderr while it waits for the answer in S3); this prints a table (or JSON).
"""

from __future__ import annotations

import argparse
import json
import os

from imgclf.async_client import DEFAULT_TIMEOUT_S, add_async_arguments, predict_async, progress_printer
from imgclf.client import classify, predictions_from
from imgclf.errors import UserError
from imgclf.sagemaker.target import BUCKET_ENV, DEFAULT_PREFIX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="Image files to classify.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-url", help="A server's base URL, e.g. http://localhost:8080.")
    target.add_argument("--endpoint-name", help="A SageMaker endpoint name (boto3 sagemaker-runtime).")
    parser.add_argument("--region", help="AWS region for --endpoint-name (default: the AWS config's).")
    parser.add_argument("--top-k", type=int, default=5, help="Labels per image (default 5).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument(
        "--custom-attributes",
        metavar="ATTRS",
        help="More SageMaker custom attributes sent after top_k=K, e.g. explain=gradcam (with --json the answer's "
        "explanations are printed too).",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds per request (default 60).")
    add_async_arguments(parser)


def async_input_location(given: str | None) -> str:
    if given:
        return given
    bucket = os.environ.get(BUCKET_ENV)
    if not bucket:
        raise UserError(f"--async uploads the images to S3: pass --async-input s3://BUCKET/PREFIX or set {BUCKET_ENV}.")
    return f"s3://{bucket}/{DEFAULT_PREFIX}/async/input"


def classify_async(args: argparse.Namespace) -> list[dict]:
    """One asynchronous invocation per image, in order, each waited for (a progress line on stderr)."""
    if not args.endpoint_name:
        raise UserError("--async needs --endpoint-name (an Asynchronous Inference endpoint).")
    if args.async_timeout <= 0:
        raise UserError("--async-timeout must be a positive number of seconds.")
    location = async_input_location(args.async_input)
    results = []
    for image in args.images:
        answer = predict_async(
            args.endpoint_name,
            image,
            input_location=location,
            timeout_s=args.async_timeout,
            top_k=args.top_k,
            progress=progress_printer(),
            region=args.region,
        )
        results.append({"image": image, "predictions": predictions_from(answer.body), "output": answer.output_location})
    return results


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError("--top-k must be at least 1.")
    if args.use_async:
        results = classify_async(args)
    else:
        if args.async_input or args.async_timeout != DEFAULT_TIMEOUT_S:
            raise UserError("--async-input and --async-timeout are for --async.")
        results = classify(
            args.images,
            args.top_k,
            endpoint_url=args.endpoint_url,
            endpoint_name=args.endpoint_name,
            region=args.region,
            timeout=args.timeout,
            attributes=args.custom_attributes,
        )
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    width = max(len("IMAGE"), *(len(r["image"]) for r in results))
    print(f"{'IMAGE':<{width}}  {'LABEL':<20} PROBABILITY")
    for r in results:
        for i, p in enumerate(r["predictions"]):
            print(f"{r['image'] if i == 0 else '':<{width}}  {p['label']:<20} {p['probability']:.4f}")
    return 0
