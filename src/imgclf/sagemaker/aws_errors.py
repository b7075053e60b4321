"""AWS errors users hit, as `UserError`s that say what to do: no region, no credentials, a quota, a permission,
a request AWS rejected (ValidationException). Used by every boto3 call of the endpoint options and the async client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imgclf.errors import UserError

QUOTA_CODES = {"ResourceLimitExceeded", "LimitExceededException", "ServiceQuotaExceededException"}
ACCESS_CODES = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException"}


def user_error(what: str, exc: BaseException) -> UserError:
    """A botocore exception as a UserError that names the action and what to do."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.NoRegionError):
        return UserError(f"{what}: no AWS region (pass --region or set AWS_DEFAULT_REGION).")
    if isinstance(exc, bx.NoCredentialsError):
        return UserError(f"{what}: no AWS credentials (`aws configure`, AWS_PROFILE or AWS_ACCESS_KEY_ID).")
    if isinstance(exc, bx.EndpointConnectionError):
        return UserError(f"{what}: cannot reach AWS ({exc}).")
    if not isinstance(exc, bx.ClientError):
        return UserError(f"{what} failed: {exc}")
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", str(exc))
    if code in QUOTA_CODES:
        hint = " Ask for more in the Service Quotas console (service: Amazon SageMaker) or use a smaller size."
    elif code in ACCESS_CODES:
        hint = " Your credentials (or the endpoint's execution role) lack the permission named above."
    elif code in {"ValidationException", "ValidationError"}:
        hint = " AWS rejected the request as sent: check the values named above."
    elif code == "ObjectNotFoundException":
        hint = " Nothing is registered for it (was autoscaling configured?)."
    else:
        hint = ""
    return UserError(f"{what} failed: {code}: {message.rstrip('.')}.{hint}")


def aws_call(what: str, call: Callable[..., Any], **request: Any) -> Any:
    """`call(**request)`; botocore errors become `user_error(what, ...)`."""
    import botocore.exceptions as bx

    try:
        return call(**request)
    except (bx.BotoCoreError, bx.ClientError) as exc:
        raise user_error(what, exc) from None
