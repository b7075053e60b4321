"""The prediction client: classify an image with a running endpoint (a local `imgclf serve` URL or a SageMaker
endpoint); `imgclf predict` (imgclf.cli.predict) and `imgclf demo`'s remote back-end (imgclf.demo) use it.

    Endpoint(url="http://localhost:8080").invoke(body, "image/png", "top_k=3,explain=gradcam")  # the whole answer
    Endpoint(name="my-endpoint", region="us-east-1").invoke(...)
    classify(["dog.jpg"], 3, endpoint_url=..., custom_attributes="explain=gradcam")              # per image file

The SageMaker path is boto3's `sagemaker-runtime.invoke_endpoint` (credentials and region from the usual AWS
chain; `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` points it elsewhere, e.g. a VPC endpoint). Options travel as SageMaker
passes them through to the container: `CustomAttributes` (`top_k=K`, `explain=gradcam[;class=NAME]`, ...).
Answers are returned whole (`predictions`, and `explanations` when asked for), parsed from JSON. Bodies over the
real-time limit (6 MB) are refused before sending; asynchronous endpoints: imgclf.async_client
(`imgclf predict --async`).
"""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from imgclf.errors import UserError
from imgclf.sagemaker.endpoints import check_payload

ACCEPT = "application/json"


def content_type_for(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed if guessed and guessed.startswith("image/") else "application/x-image"


def custom_attributes(top_k: int, extra: str | None = None) -> str:
    """`top_k=K`, then the caller's own attributes (e.g. `explain=gradcam`), comma-separated."""
    return f"top_k={top_k}" + (f",{extra}" if extra else "")


class Endpoint:
    """A running server (`url`) or a SageMaker endpoint (`name`; one boto3 client for every request)."""

    def __init__(
        self, url: str | None = None, name: str | None = None, region: str | None = None, timeout: float = 60.0
    ) -> None:
        if bool(url) == bool(name):
            raise ValueError("Endpoint needs exactly one of url or name")
        self.url, self.name, self.timeout = url, name, timeout
        self.description = url or f"SageMaker endpoint {name}"
        self._client = None
        if name:
            import boto3

            self._client = boto3.client("sagemaker-runtime", region_name=region)

    def invoke(self, body: bytes, content_type: str, attributes: str | None = None) -> dict[str, Any]:
        """The whole JSON answer for one request body; UserError with the server's message when it refuses."""
        check_payload(len(body), "realtime")
        raw = self._invoke_endpoint(body, content_type, attributes) if self.name else self._post(
            body, content_type, attributes
        )  # fmt: skip
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "predictions" not in answer:
            raise UserError(f"Unexpected answer (not imgclf's JSON schema): {raw[:200]!r}")
        return answer

    def _post(self, body: bytes, content_type: str, attributes: str | None) -> bytes:
        headers = {"Content-Type": content_type, "Accept": ACCEPT}
        if attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        request = urllib.request.Request(
            self.url.rstrip("/") + "/invocations", data=body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            message = exc.read().decode(errors="replace").strip()
            raise UserError(f"{self.url} answered {exc.code} {exc.reason}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"Cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def _invoke_endpoint(self, body: bytes, content_type: str, attributes: str | None) -> bytes:
        import botocore.exceptions

        client = self._client
        kwargs = {"CustomAttributes": attributes} if attributes else {}
        try:
            response = client.invoke_endpoint(
                EndpointName=self.name, Body=body, ContentType=content_type, Accept=ACCEPT, **kwargs
            )
        except client.exceptions.ModelError as exc:  # the container answered 4xx/5xx
            message = exc.response.get("OriginalMessage") or exc
            raise UserError(f"Endpoint {self.name} refused the request: {message}") from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise UserError(f"Cannot invoke endpoint {self.name}: {exc}") from None
        return response["Body"].read()


def predictions_from(answer: bytes) -> list[dict]:
    """The first image's predictions from a raw JSON answer (an async endpoint's output file)."""
    try:
        parsed = json.loads(answer)
        return parsed["predictions"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f"Unexpected answer (not imgclf's JSON schema): {answer[:200]!r}") from None


def classify(
    images: list[str],
    top_k: int,
    *,
    endpoint_url: str | None = None,
    endpoint_name: str | None = None,
    region: str | None = None,
    timeout: float = 60.0,
    attributes: str | None = None,
) -> list[dict]:
    """[{"image": file, "predictions": [{"label", "probability"}...], ...}] per image file, in order: from the
    server at `endpoint_url`, else from the SageMaker endpoint `endpoint_name`. `attributes` are sent after
    `top_k=K` (e.g. `explain=gradcam`); whatever else the answer holds for the image (`explanations`) is kept."""
    endpoint = Endpoint(url=endpoint_url, name=None if endpoint_url else endpoint_name, region=region, timeout=timeout)
    results = []
    for image in images:
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{image}: no such file.")
        answer = endpoint.invoke(path.read_bytes(), content_type_for(image), custom_attributes(top_k, attributes))
        try:
            per_image = {key: value[0] for key, value in answer.items() if isinstance(value, list) and value}
        except (KeyError, TypeError):
            per_image = {}
        if not isinstance(per_image.get("predictions"), list):
            raise UserError(f"Unexpected answer (not imgclf's JSON schema): {str(answer)[:200]}")
        results.append({"image": image, **per_image})
    return results
