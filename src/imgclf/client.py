"""The prediction client: classify an image with a running endpoint (a local `imgclf serve` URL or a SageMaker
endpoint); `imgclf predict` (imgclf.cli.predict) is its command line.

The SageMaker path is boto3's `sagemaker-runtime.invoke_endpoint` (credentials and region from the usual AWS
chain; `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` points it elsewhere, e.g. a VPC endpoint). k is sent as
`CustomAttributes: top_k=K`, the way SageMaker passes options through to the container. Bodies over the real-time
limit (6 MB) are refused before sending; asynchronous endpoints: imgclf.async_client (`imgclf predict --async`).
"""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
from pathlib import Path

from imgclf.errors import UserError
from imgclf.sagemaker.endpoints import check_payload

ACCEPT = "application/json"


def content_type_for(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed if guessed and guessed.startswith("image/") else "application/x-image"


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
    return predictions_from(answer)


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
    return predictions_from(response["Body"].read())


def predictions_from(answer: bytes) -> list[dict]:
    """The one image's predictions of an imgclf JSON answer (real-time or an async endpoint's output object)."""
    try:
        (predictions,) = json.loads(answer)["predictions"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"Unexpected answer (not imgclf's JSON schema): {answer[:200]!r}") from None
    return predictions


def classify(
    images: list[str],
    top_k: int,
    *,
    endpoint_url: str | None = None,
    endpoint_name: str | None = None,
    region: str | None = None,
    timeout: float = 60.0,
) -> list[dict]:
    """[{"image": file, "predictions": [{"label", "probability"}...]}] per image file, in order: from the server at
    `endpoint_url`, else from the SageMaker endpoint `endpoint_name` (one boto3 client for all of them)."""
    client = None
    if endpoint_name:
        import boto3

        client = boto3.client("sagemaker-runtime", region_name=region)
    results = []
    for image in images:
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{image}: no such file.")
        body, ct = path.read_bytes(), content_type_for(image)
        if endpoint_name:  # SageMaker refuses bodies over 6 MB; say so before sending, with the way out
            check_payload(len(body), "realtime")
        if endpoint_url:
            preds = predict_url(endpoint_url, body, ct, top_k, timeout)
        else:
            preds = predict_endpoint(endpoint_name, body, ct, top_k, client=client)
        results.append({"image": image, "predictions": preds})
    return results
