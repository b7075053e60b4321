"""The one place an error becomes an HTTP status and message.

Client errors are raised as `sagemaker_inference.errors.GenericInferenceToolkitError` with the right code
(the toolkit's `UnsupportedFormatError` would become a 500). Anything else reaching `http_error` is a bug in
imgclf (or a resource the request budget did not foresee): it is answered with 500 and a generic body
(`INTERNAL_ERROR`: no exception text, no allocation sizes, no paths), and the caller logs its traceback.

    400 Bad Request            empty body, corrupt / truncated / non-image bytes, malformed JSON or base64,
                               a JSON `url` (the server never fetches URLs), a wrong array shape
    406 Not Acceptable         an Accept type we cannot produce
    413 Payload Too Large      a request over its budget (imgclf.serving.limits: images, pixels, aspect ratio,
                               .npy bytes, JSON bytes), decompression bombs included; bodies over
                               SAGEMAKER_MAX_PAYLOAD_IN_MB are refused with 413 by the MMS front-end itself
    415 Unsupported Media Type a Content-Type we cannot decode
    500 Internal Server Error  a bug; the body is INTERNAL_ERROR, the details are in the log only
"""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError

from imgclf.errors import UserError

INTERNAL_ERROR = "Internal error, see the endpoint's logs."


class ClientError(GenericInferenceToolkitError):
    """A 4xx answer; the message is the whole explanation the caller sees."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(int(status), message, status.phrase)


def bad_request(message: str) -> ClientError:
    return ClientError(HTTPStatus.BAD_REQUEST, message)


def not_acceptable(accept: str, supported: list[str]) -> ClientError:
    return ClientError(
        HTTPStatus.NOT_ACCEPTABLE, f"Cannot answer with Accept: {accept!r}. Supported: {', '.join(supported)}."
    )


def payload_too_large(message: str) -> ClientError:
    return ClientError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, message)


def unsupported_media_type(content_type: str, supported: list[str]) -> ClientError:
    return ClientError(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"Cannot decode Content-Type: {content_type!r}. Supported: {', '.join(supported)}.",
    )


def http_error(exc: BaseException) -> tuple[int, str, str]:
    """(status, reason phrase, message body) for any exception raised while answering a request."""
    if isinstance(exc, BaseInferenceToolkitError) and int(exc.status_code) < 500:
        return int(exc.status_code), str(exc.phrase).splitlines()[0][:80], str(exc.message)
    if isinstance(exc, UserError):
        return 400, HTTPStatus.BAD_REQUEST.phrase, str(exc)
    if isinstance(exc, BaseInferenceToolkitError):  # a 5xx the toolkit raised: its status, not its text
        status = HTTPStatus(int(exc.status_code)) if int(exc.status_code) in HTTPStatus._value2member_map_ else None
        return int(exc.status_code), status.phrase if status else "Server Error", INTERNAL_ERROR
    return 500, HTTPStatus.INTERNAL_SERVER_ERROR.phrase, INTERNAL_ERROR
