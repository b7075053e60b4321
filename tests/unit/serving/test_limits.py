"""The request budget: defaults derived from the 1 GiB bound, every limit settable through its IMGCLF_* variable."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from support.handler_calls import call_one, image_bytes

from imgclf.serving import decoders, errors, limits
from imgclf.serving.environment import request_limits_from_env
from imgclf.serving.limits import ENV, RequestLimits

pytestmark = pytest.mark.unit


def test_default_limits_keep_one_request_under_the_1_gib_budget():
    assert limits.REQUEST_BUDGET_BYTES == 1 << 30
    assert RequestLimits().budget_bytes() <= limits.REQUEST_BUDGET_BYTES
    assert RequestLimits(max_image_pixels=80_000_000).budget_bytes() > limits.REQUEST_BUDGET_BYTES


def test_every_limit_has_its_own_variable_documented_in_the_module():
    fields = {f.name for f in dataclasses.fields(RequestLimits)} - {"resize_short_side"}
    assert set(ENV) == fields
    assert len(set(ENV.values())) == len(ENV) and all(v.startswith("IMGCLF_") for v in ENV.values())


def test_unset_variables_keep_the_defaults(monkeypatch):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert request_limits_from_env() == RequestLimits()
    assert request_limits_from_env(resize_short_side=256) == RequestLimits(resize_short_side=256)


def test_every_variable_is_read(monkeypatch):
    values = {
        "max_images": ("7", 7),
        "max_image_pixels": ("1000", 1000),
        "max_request_pixels": ("2000", 2000),
        "max_aspect_ratio": ("2.5", 2.5),
        "max_resized_pixels": ("3000", 3000),
        "max_npy_bytes": ("4000", 4000),
        "max_npy_ndim": ("3", 3),
        "npy_dtypes": (" uint8 , float32 ", ("uint8", "float32")),
        "max_json_bytes": ("5000", 5000),
        "max_json_depth": ("4", 4),
        "image_formats": ("png, jpeg", ("PNG", "JPEG")),
    }
    assert set(values) == set(ENV)
    for field, (raw, _) in values.items():
        monkeypatch.setenv(ENV[field], raw)
    got = request_limits_from_env()
    assert {f: getattr(got, f) for f in values} == {f: v for f, (_, v) in values.items()}


@pytest.mark.parametrize(("name", "raw"), [("IMGCLF_MAX_IMAGES_PER_REQUEST", "many"), ("IMGCLF_MAX_JSON_DEPTH", "0")])
def test_bad_values_name_their_variable(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=name):
        request_limits_from_env()


def test_resized_pixels_follow_the_short_side_resize():
    lim = RequestLimits(resize_short_side=256)
    assert lim.resized_pixels(512, 512) == 256 * 256
    assert lim.resized_pixels(40_000, 2) == 256 * 5_120_000
    assert lim.resized_pixels(3, 1000) == 256 * 85_334
    assert RequestLimits().resized_pixels(10, 10) is None


def test_every_refusal_names_its_variable_and_a_fix():
    msgs = []
    for body, ct, lim in [
        (image_bytes(size=(100, 100)), "image/png", RequestLimits(max_image_pixels=5000)),
        (image_bytes(size=(100, 2)), "image/png", RequestLimits(max_aspect_ratio=10)),
        (image_bytes(size=(100, 10)), "image/png", RequestLimits(max_resized_pixels=100, resize_short_side=10)),
    ]:
        with pytest.raises(errors.ClientError) as info:
            decoders.decode(body, ct, lim)
        msgs.append(info.value.message)
    for msg in msgs:
        assert "IMGCLF_" in msg and ("Resize" in msg or "Crop" in msg), msg


def test_the_handler_applies_the_models_resize_step(handler):
    assert handler.limits.resize_short_side == handler.meta.resize_size
    body = image_bytes(size=(2000, 20))  # aspect 100:1, over the default 50
    status, _, payload = call_one(handler, body)
    assert status == 413 and b"IMGCLF_MAX_ASPECT_RATIO" in payload


@pytest.mark.parametrize(
    "exc", [MemoryError("Unable to allocate 9.09 TiB for an array"), RecursionError("maximum recursion depth")]
)
def test_an_unexpected_failure_is_a_generic_500_with_details_only_in_the_log(handler, monkeypatch, caplog, exc):
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(decoders, "decode", boom)
    with caplog.at_level(logging.ERROR):
        status, _, payload = call_one(handler, image_bytes())
    assert status == 500 and payload.decode().strip() == errors.INTERNAL_ERROR
    assert type(exc).__name__ in caplog.text and str(exc) in caplog.text
