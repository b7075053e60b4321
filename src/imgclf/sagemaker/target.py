"""Where SageMaker jobs run: an AWS account (role, bucket, region, credentials) or local mode (Docker, file://).

`resolve_target` checks everything a real SageMaker call needs before any call is made and names all that is
missing at once. Local mode needs no AWS account; `local_config` and `prepare_local_env` set it up offline.
`sdk_major` says which SageMaker SDK is installed (it is not a dependency of imgclf).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf.errors import UserError

DEFAULT_PREFIX = "imgclf"
ROLE_ENV = "IMGCLF_SAGEMAKER_ROLE"
BUCKET_ENV = "IMGCLF_SAGEMAKER_BUCKET"
LOCAL_SERVING_PORT_ENV = "IMGCLF_LOCAL_SERVING_PORT"
# Local mode never calls IAM; the SDK still insists on a role string.
LOCAL_ROLE = "arn:aws:iam::111111111111:role/imgclf-local-mode"

SDK_HINT = (
    "The SageMaker Python SDK is not installed in this Python ({exe}). It is not a dependency of imgclf: "
    "install it next to imgclf with `pip install 'sagemaker>=2.257,<3' 'protobuf==3.20.3' 'numpy<2'` "
    "(or run `bash scripts/sdk_venvs.sh` and use .venv-sdk2/bin/imgclf)."
)


def file_uri(path: str | os.PathLike) -> str:
    return "file://" + str(Path(path).resolve())


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


@dataclass(frozen=True)
class Target:
    """Where jobs run: SageMaker (role, bucket, region) or local mode (a folder for file:// outputs)."""

    local: bool
    region: str
    role: str
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    workdir: Path | None = None

    def output_path(self, kind: str) -> str:
        if self.local:
            path = (self.workdir or Path("sagemaker-local")) / kind
            path.mkdir(parents=True, exist_ok=True)
            return file_uri(path)
        return f"s3://{self.bucket}/{self.prefix}/{kind}"


def resolve_target(
    *,
    local: bool,
    role: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    workdir: str | os.PathLike | None = None,
    action: str = "this command",
    check_credentials: bool = True,
) -> Target:
    """Check that a real SageMaker call has what it needs (role, bucket, region, credentials) before any call.

    Raises UserError naming everything that is missing at once and how to supply it.
    """
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if local:
        return Target(
            local=True,
            region=region or "us-east-1",
            role=role or LOCAL_ROLE,
            bucket=bucket,
            prefix=prefix,
            workdir=Path(workdir) if workdir else Path("sagemaker-local"),
        )
    role = role or os.environ.get(ROLE_ENV)
    bucket = bucket or os.environ.get(BUCKET_ENV)
    boto_session = None
    if region is None or check_credentials:
        import boto3

        boto_session = boto3.Session(region_name=region)
        region = region or boto_session.region_name
    missing = []
    if not role:
        missing.append(
            f"an IAM execution role SageMaker can assume (--role arn:aws:iam::ACCOUNT:role/NAME or {ROLE_ENV}); "
            "it needs AmazonSageMakerFullAccess and read/write on the bucket"
        )
    elif not (role.startswith("arn:aws") and ":role/" in role):
        missing.append(f"a role ARN (arn:aws:iam::ACCOUNT:role/NAME), not {role!r}")
    if not bucket:
        missing.append(f"an S3 bucket for data, checkpoints and outputs (--bucket NAME or {BUCKET_ENV})")
    if not region:
        missing.append("an AWS region (--region or AWS_DEFAULT_REGION)")
    if check_credentials and boto_session is not None:
        creds_hint = "AWS credentials (`aws configure`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        try:
            if boto_session.get_credentials() is None:
                missing.append(creds_hint)
        except Exception as exc:  # botocore: a configured provider that fails (SSO expired, metadata denied)
            missing.append(f"{creds_hint}; looking them up failed: {exc}")
    if missing:
        raise UserError(
            f"{action} calls SageMaker in your AWS account and needs: "
            + "; ".join(missing)
            + ". To try it on this machine without AWS, add --local (SageMaker local mode, Docker)."
        )
    return Target(local=False, region=region, role=role, bucket=bucket.removeprefix("s3://").strip("/"), prefix=prefix)


def sdk_major() -> int:
    """Major version of the installed SageMaker SDK (2 or 3); UserError when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("sagemaker")
    except PackageNotFoundError:
        raise UserError(SDK_HINT.format(exe=sys.executable)) from None
    return int(v.split(".")[0])


# ---------------------------------------------------------------------------------------------------------------
# Local mode.


def local_serving_port() -> int:
    """Host port for local endpoints: IMGCLF_LOCAL_SERVING_PORT, else a free one (the SDK's 8080 is often taken)."""
    if os.environ.get(LOCAL_SERVING_PORT_ENV):
        return int(os.environ[LOCAL_SERVING_PORT_ENV])
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_config(target: Target) -> dict[str, Any]:
    """`LocalSession.config["local"]` (v2 and v3): the SDK's per-job folders (config, model, compose file)
    under the workdir instead of /tmp, and a free host port for endpoints."""
    root = (target.workdir or Path("sagemaker-local")) / "containers"
    root.mkdir(parents=True, exist_ok=True)
    return {"local_code": True, "container_root": str(root.resolve()), "serving_port": local_serving_port()}


TELEMETRY_OPT_OUT = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""
PLACEHOLDER_KEY = "local-mode-placeholder"


def local_env(workdir: str | os.PathLike) -> dict[str, str]:
    """The environment variables local mode needs that are not set yet ({} when the user set them all).

      SAGEMAKER_USER_CONFIG_OVERRIDE  a config file (written under `workdir`) that turns the SDK's telemetry off
      AWS_DEFAULT_REGION              us-east-1, when neither AWS_REGION nor AWS_DEFAULT_REGION is set
      AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   placeholders, when boto3 finds no credentials at all

    Local mode makes no AWS call with file:// data, but the SDK builds boto3 clients (a region is needed, and
    credentials for request signing) and sends telemetry unless told not to. Settings the user made are kept.
    """
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        config = root / "sagemaker-config.yaml"
        config.write_text(TELEMETRY_OPT_OUT)
        wanted["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config.resolve())
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        wanted["AWS_DEFAULT_REGION"] = "us-east-1"
    import boto3

    try:
        has_credentials = boto3.Session(region_name=wanted.get("AWS_DEFAULT_REGION")).get_credentials() is not None
    except Exception:
        has_credentials = False
    if not has_credentials:
        wanted.update(AWS_ACCESS_KEY_ID=PLACEHOLDER_KEY, AWS_SECRET_ACCESS_KEY=PLACEHOLDER_KEY)
    return wanted


def prepare_local_env(workdir: str | os.PathLike) -> dict[str, str]:
    """Set `local_env(workdir)` in os.environ for this process; returns what was set.

    The one os.environ write in imgclf, and on purpose: the SageMaker SDK reads its config override and boto3
    reads region and credentials from the environment when they build sessions and clients deep inside the SDK
    (v2 and v3, local mode), so there is no argument to hand them to. Only the `imgclf sagemaker --local`
    command calls this, before it builds any SDK object.
    """
    wanted = local_env(workdir)
    os.environ.update(wanted)
    return wanted
