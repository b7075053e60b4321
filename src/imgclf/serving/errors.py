"""The one place an error becomes an HTTP status and message.

Client errors are raised as `sagemaker_inference.errors.GenericInferenceToolkitError` with the right code
(the toolkit's `UnsupportedFormatError` would become a 500). Anything else reaching `http_error` is a bug in
imgclf: it is answered with 500 and its traceback is logged by the caller.

    400 Bad Request            empty body, corrupt / truncated / non-image bytes, malformed JSON or base64,
                               a JSON `url` (the server never fetches URLs), a wrong array shape
    406 Not Acceptable         an Accept type we cannot produce
    413 Payload Too Large      an image over the pixel limit (decompression bomb); bodies over
                               SAGEMAKER_MAX_PAYLOAD_IN_MB are refused with 413 by the MMS front-end itself
    415 Unsupported Media Type a Content-Type we cannot decode
    500 Internal Server Error  a bug
"""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError

from imgclf.errors import UserError


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
    if isinstance(exc, BaseInferenceToolkitError):
        return int(exc.status_code), str(exc.phrase).splitlines()[0][:80], str(exc.message)
    if isinstance(exc, UserError):
        return 400, HTTPStatus.BAD_REQUEST.phrase, str(exc)
    return 500, HTTPStatus.INTERNAL_SERVER_ERROR.phrase, f"Internal error: {type(exc).__name__}: {exc}"
