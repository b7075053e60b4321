"""`imgclf predict`: classify images with a running endpoint (a local `imgclf serve` URL or a SageMaker endpoint).

    imgclf predict dog.jpg cat.png --endpoint-url http://localhost:8080 [--top-k 3] [--json]
    imgclf predict dog.jpg --endpoint-name my-endpoint [--region us-east-1]

The SageMaker path is boto3's `sagemaker-runtime.invoke_endpoint` (credentials and region from the usual AWS
chain; `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` points it elsewhere, e.g. a VPC endpoint). k is sent as
`CustomAttributes: top_k=K`, the way SageMaker passes options through to the container.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import urllib.error
import urllib.request
from pathlib import Path

from imgclf.errors import UserError

ACCEPT = "application/json"


def content_type_for(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed if guessed and guessed.startswith("image/") else "application/x-image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="Image files to classify.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-url", help="A server's base URL, e.g. http://localhost:8080.")
    target.add_argument("--endpoint-name", help="A SageMaker endpoint name (boto3 sagemaker-runtime).")
    parser.add_argument("--region", help="AWS region for --endpoint-name (default: the AWS config's).")
    parser.add_argument("--top-k", type=int, default=5, help="Labels per image (default 5).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds per request (default 60).")


def predict_url(url: str, body: bytes, content_type: str, top_k: int, timeout: float = 60.0) -> list[dict]:
    request = urllib.request.Request(
        url.rstrip("/") + "/invocations",
        data=body,
        method="POST",
        headers={
            "Content-Type": content_type,
            "Accept": ACCEPT,
            "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        message = exc.read().decode(errors="replace").strip()
        raise UserError(f"{url} answered {exc.code} {exc.reason}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"Cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    return _predictions(answer)


def predict_endpoint(
    name: str, body: bytes, content_type: str, top_k: int, region: str | None = None, client=None
) -> list[dict]:
    import boto3
    import botocore.exceptions

    client = client or boto3.client("sagemaker-runtime", region_name=region)
    try:
        response = client.invoke_endpoint(
            EndpointName=name,
            Body=body,
            ContentType=content_type,
            Accept=ACCEPT,
            CustomAttributes=f"top_k={top_k}",
        )
    except client.exceptions.ModelError as exc:  # the container answered 4xx/5xx
        raise UserError(f"Endpoint {name} refused the request: {exc.response.get('OriginalMessage') or exc}") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise UserError(f"Cannot invoke endpoint {name}: {exc}") from None
    return _predictions(response["Body"].read())


def _predictions(answer: bytes) -> list[dict]:
    try:
        (predictions,) = json.loads(answer)["predictions"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"Unexpected answer (not imgclf's JSON schema): {answer[:200]!r}") from None
    return predictions


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError("--top-k must be at least 1.")
    client = None
    if args.endpoint_name:
        import boto3

        client = boto3.client("sagemaker-runtime", region_name=args.region)
    results = []
    for image in args.images:
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{image}: no such file.")
        body, ct = path.read_bytes(), content_type_for(image)
        if args.endpoint_url:
            preds = predict_url(args.endpoint_url, body, ct, args.top_k, args.timeout)
        else:
            preds = predict_endpoint(args.endpoint_name, body, ct, args.top_k, client=client)
        results.append({"image": image, "predictions": preds})
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    width = max(len("IMAGE"), *(len(r["image"]) for r in results))
    print(f"{'IMAGE':<{width}}  {'LABEL':<20} PROBABILITY")
    for r in results:
        for i, p in enumerate(r["predictions"]):
            print(f"{r['image'] if i == 0 else '':<{width}}  {p['label']:<20} {p['probability']:.4f}")
    return 0
