"""moto in server mode: a `moto_server` process on a free 127.0.0.1 port that boto3 and awscli reach through their
endpoint override (AWS_ENDPOINT_URL). The one copy, used by tests/container/test_push.py (ECR + STS) and
tests/integration/test_endpoints_moto.py (SageMaker, Application Auto Scaling, CloudWatch, S3).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import VENV_BIN
from support.ports import HOST, free_port

MISSING = "moto server missing: run `bash scripts/docker_setup.sh` (moto[server] into .venv)"
REGION = "us-east-1"


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.3)


def moto_server_path() -> Path | None:
    path = VENV_BIN / "moto_server"
    return path if path.exists() else None


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A running moto server; yields its base URL. Without moto_server the test fails with MISSING: a missing
    prerequisite fails the test, it does not skip it."""
    path = moto_server_path()
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    port = free_port()
    proc = subprocess.Popen(
        [str(path), "-H", HOST, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_http(f"{url}/moto-api/")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def aws_env(url: str, scratch: Path, region: str = REGION) -> dict[str, str]:
    """Variables that point boto3 / awscli at moto with dummy credentials and none of the user's AWS files."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": str(scratch / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "aws-credentials"),
    }
