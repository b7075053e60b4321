"""The one error -> HTTP mapping: client errors keep their 4xx, the toolkit's 500 trap is avoided."""

from __future__ import annotations

import pytest
from sagemaker_inference.errors import GenericInferenceToolkitError, UnsupportedFormatError

from imgclf.errors import UserError
from imgclf.serving import errors

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "exc,status",
    [
        (errors.bad_request("x"), 400),
        (errors.not_acceptable("text/csv", ["application/json"]), 406),
        (errors.payload_too_large("x"), 413),
        (errors.unsupported_media_type("text/csv", ["image/png"]), 415),
        (UserError("bad"), 400),
        (GenericInferenceToolkitError(404, "nope"), 404),
        (RuntimeError("bug"), 500),
    ],
)
def test_status_for_each_error(exc, status):
    code, phrase, message = errors.http_error(exc)
    assert code == status and phrase and message


def test_client_errors_are_toolkit_errors_not_unsupported_format_500():
    err = errors.unsupported_media_type("text/csv", ["image/png"])
    assert isinstance(err, GenericInferenceToolkitError) and not isinstance(err, UnsupportedFormatError)
    assert err.phrase == "Unsupported Media Type"


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError("Unable to allocate 9.09 TiB for an array with shape (1000000, 3, 1000, 1000)"),
        RecursionError("maximum recursion depth exceeded"),
        GenericInferenceToolkitError(503, "worker /opt/ml/model/secret.py crashed"),
    ],
)
def test_a_5xx_body_is_generic_and_leaks_nothing(exc):
    code, phrase, message = errors.http_error(exc)
    assert code >= 500 and message == errors.INTERNAL_ERROR == "Internal error, see the endpoint's logs."
    assert phrase and "secret" not in phrase
