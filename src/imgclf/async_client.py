"""Asynchronous Inference from the client side: upload the input to S3, `invoke_endpoint_async`, wait for the
answer in S3 (or the failure SageMaker writes instead), with a progress indicator and a timeout.

    answer = predict_async("my-endpoint", "big.png", input_location="s3://bucket/imgclf/async/input")
    answer.body  # the container's answer, as it would have come from /invocations

Asynchronous endpoints accept bodies up to 1 GB (the real-time limit is 6 MB) and may take up to an hour per
request; the answer lands at the OutputLocation the call returns (under the endpoint's AsyncInferenceConfig
S3OutputPath), a failure at FailureLocation (S3FailurePath). boto3 only, no SageMaker SDK, no torch.
"""

from __future__ import annotations

import mimetypes
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from imgclf.errors import UserError
from imgclf.sagemaker.aws_errors import aws_call, user_error

ACCEPT = "application/json"
DEFAULT_TIMEOUT_S = 900.0
POLL_S = 2.0
MAX_POLL_S = 15.0


@dataclass(frozen=True)
class AsyncAnswer:
    inference_id: str
    input_location: str
    output_location: str
    body: bytes
    seconds: float


def split_s3(uri: str, what: str = "S3 location") -> tuple[str, str]:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise UserError(f"{what} must be an s3://BUCKET/KEY URI, got {uri!r}.")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def content_type_for(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if guessed and (guessed.startswith("image/") or guessed == "application/x-npy"):
        return guessed
    return "application/x-image"


def upload_input(s3, path: Path, input_location: str) -> str:
    """Upload `path` under the `input_location` prefix (a fresh key per call); returns its s3:// URI."""
    bucket, prefix = split_s3(input_location, "--async-input")
    key = f"{prefix.rstrip('/')}/{uuid.uuid4().hex}-{path.name}".lstrip("/")
    aws_call(f"Uploading {path} to s3://{bucket}/{key}", s3.upload_file, Filename=str(path), Bucket=bucket, Key=key)
    return f"s3://{bucket}/{key}"


def _object(s3, uri: str) -> bytes | None:
    """The object's bytes, or None while it does not exist yet."""
    import botocore.exceptions as bx

    bucket, key = split_s3(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except bx.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise user_error(f"Reading {uri}", exc) from None


def progress_printer(stream: TextIO | None = None) -> Callable[[float, str], None]:
    """A one-line progress indicator on stderr: '… waiting for s3://…/x.out  12 s'."""
    out = stream or sys.stderr
    spinner = "|/-\\"
    calls = [0]

    def show(elapsed: float, location: str) -> None:
        calls[0] += 1
        end = "\n" if elapsed < 0 else ""
        text = "done" if elapsed < 0 else f"{spinner[calls[0] % 4]} waiting for {location}  {elapsed:4.0f} s"
        out.write(f"\r{text}{end}")
        out.flush()

    return show


def wait_for_answer(
    s3,
    output_location: str,
    failure_location: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
    progress: Callable[[float, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """Poll the output (and failure) object until one exists; back off from poll_s to MAX_POLL_S."""
    started = clock()
    delay = poll_s
    while True:
        body = _object(s3, output_location)
        if body is not None:
            if progress:
                progress(-1.0, output_location)
            return body
        if failure_location:
            failure = _object(s3, failure_location)
            if failure is not None:
                message = failure.decode(errors="replace").strip()[:2000]
                raise UserError(f"The endpoint failed this request (written to {failure_location}): {message}")
        elapsed = clock() - started
        if elapsed >= timeout_s:
            raise UserError(
                f"No answer within {timeout_s:.0f} s. The request is still queued or running: its answer will "
                f"appear at {output_location} (failures at {failure_location or 'the endpoint S3FailurePath'})."
            )
        if progress:
            progress(elapsed, output_location)
        sleep(min(delay, max(0.0, timeout_s - elapsed)))
        delay = min(delay * 1.5, MAX_POLL_S)


def predict_async(
    endpoint_name: str,
    path: str | Path,
    *,
    input_location: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    content_type: str | None = None,
    top_k: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    region: str | None = None,
    s3=None,
    runtime=None,
    poll_s: float = POLL_S,
) -> AsyncAnswer:
    """Upload, invoke asynchronously, wait for the answer (UserError on failure or timeout)."""
    import boto3

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file.")
    s3 = s3 or boto3.client("s3", region_name=region)
    runtime = runtime or boto3.client("sagemaker-runtime", region_name=region)
    started = time.monotonic()
    uri = upload_input(s3, path, input_location)
    request = {
        "EndpointName": endpoint_name,
        "InputLocation": uri,
        "ContentType": content_type or content_type_for(str(path)),
        "Accept": ACCEPT,
    }
    if top_k is not None:
        request["CustomAttributes"] = f"top_k={top_k}"
    response = aws_call(f"InvokeEndpointAsync {endpoint_name}", runtime.invoke_endpoint_async, **request)
    body = wait_for_answer(
        s3,
        response["OutputLocation"],
        response.get("FailureLocation"),
        timeout_s=timeout_s,
        poll_s=poll_s,
        progress=progress,
    )
    elapsed = time.monotonic() - started
    return AsyncAnswer(response.get("InferenceId", ""), uri, response["OutputLocation"], body, elapsed)


def add_async_arguments(parser) -> None:
    """`imgclf predict --endpoint-name E --async --async-input s3://...` (phase 2: cli/predict.py calls this)."""
    group = parser.add_argument_group("asynchronous endpoints")
    group.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="Invoke an Asynchronous Inference endpoint: upload to S3, wait for the answer in S3.",
    )
    group.add_argument(
        "--async-input",
        metavar="S3_PREFIX",
        help="Where inputs are uploaded (default: s3://$IMGCLF_SAGEMAKER_BUCKET/imgclf/async/input).",
    )
    group.add_argument(
        "--async-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="Seconds to wait for each answer (default %(default)g).",
    )
