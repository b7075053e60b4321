"""Request decoding: every accepted type, every conversion rule, every refusal with its status."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
import support.hostile_payloads as hp
from PIL import Image
from support.handler_calls import image_bytes

from imgclf.serving import decoders
from imgclf.serving.errors import ClientError
from imgclf.serving.limits import RequestLimits

pytestmark = pytest.mark.unit

LIMIT = RequestLimits(resize_short_side=256)  # the defaults, with the resize step of a 224-px model


def status_of(fn, *args) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        fn(*args)
    return info.value.status_code, info.value.message


@pytest.mark.parametrize("ct", ["image/jpeg", "image/png", "application/x-image", "application/octet-stream", None])
def test_one_image_body_decodes_to_rgb_for_every_image_content_type(ct):
    (img,) = decoders.decode(image_bytes("PNG"), ct, LIMIT)
    assert img.mode == "RGB" and img.size == (40, 30)


def test_other_pillow_formats_decode_via_their_image_content_type():
    for fmt, ct in (("BMP", "image/bmp"), ("WEBP", "image/webp"), ("TIFF", "image/tiff")):
        (img,) = decoders.decode(image_bytes(fmt), ct, LIMIT)
        assert img.mode == "RGB", fmt


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG")])
def test_greyscale_cmyk_palette_alpha_and_16bit_are_converted_to_rgb(mode, fmt):
    (img,) = decoders.decode(image_bytes(fmt, mode=mode), "image/png", LIMIT)
    assert img.mode == "RGB"
    if mode == "I;16":  # scaled to 8 bit, not clipped to white
        assert 0 < np.asarray(img).mean() < 255


def test_animated_gif_is_classified_by_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (img,) = decoders.decode(buf.getvalue(), "image/gif", LIMIT)
    r, g, b = np.asarray(img)[0, 0]
    assert r > 200 and b < 50


def test_truncated_png_is_400():
    data = image_bytes("PNG", size=(200, 200))
    code, msg = status_of(decoders.decode, data[: len(data) // 2], "image/png", LIMIT)
    assert code == 400 and "truncated" in msg.lower()


def test_non_image_bytes_with_image_content_type_is_400():
    code, msg = status_of(decoders.decode, b"hello, not an image at all", "image/jpeg", LIMIT)
    assert code == 400 and "not an image" in msg


def test_empty_body_is_400():
    assert status_of(decoders.decode, b"", "image/jpeg", LIMIT)[0] == 400


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height zeros, built row by row (never the whole image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_20000_by_20000_png_bomb_is_refused_with_413_fast():
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 200_000
    started = time.monotonic()
    code, msg = status_of(decoders.decode, bomb, "image/png", LIMIT)
    assert code == 413 and "400,000,000 pixels" in msg and "IMGCLF_MAX_IMAGE_PIXELS" in msg
    assert time.monotonic() - started < 1.0


def test_json_image_instances_and_bare_string_forms():
    b64 = base64.b64encode(image_bytes()).decode()
    assert len(decoders.decode(json.dumps({"image": b64}).encode(), "application/json", LIMIT)) == 1
    body = json.dumps({"instances": [b64, {"image": b64}, {"b64": b64}]}).encode()
    assert len(decoders.decode(body, "application/json", LIMIT)) == 3
    assert len(decoders.decode(json.dumps(b64).encode(), "application/json", LIMIT)) == 1
    data_uri = "data:image/png;base64," + b64
    assert len(decoders.decode(json.dumps({"image": data_uri}).encode(), "application/json", LIMIT)) == 1


@pytest.mark.parametrize("ct", ["application/json", "application/jsonlines"])
def test_json_lines_of_base64_images_are_one_record_each(ct):
    b64 = base64.b64encode(image_bytes()).decode()
    body = "\n".join(json.dumps({"image": b64}) for _ in range(3)).encode()
    assert len(decoders.decode(body, ct, LIMIT)) == 3


@pytest.mark.parametrize(
    "doc", [{"url": "http://169.254.169.254/latest/meta-data"}, {"instances": [{"url": "http://x/y.jpg"}]}]
)
def test_json_url_is_refused_with_400_because_the_server_never_fetches(doc):
    code, msg = status_of(decoders.decode, json.dumps(doc).encode(), "application/json", LIMIT)
    assert code == 400 and "never fetches URLs" in msg


@pytest.mark.parametrize(
    "body,needle",
    [
        (b'{"image": "abc', "Malformed JSON"),
        (b'{"image": "!!!not base64!!!"}', "base64"),
        (b'{"picture": "x"}', "Expected"),
        (b"[1, 2]", "instance"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_malformed_json_and_base64_are_400(body, needle):
    code, msg = status_of(decoders.decode, body, "application/json", LIMIT)
    assert code == 400 and needle in msg


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_npy_uint8_images_and_float_tensors():
    assert len(decoders.decode(npy(np.zeros((20, 24, 3), np.uint8)), "application/x-npy", LIMIT)) == 1
    assert len(decoders.decode(npy(np.zeros((5, 8, 8), np.uint8)), "application/x-npy", LIMIT)) == 5
    assert len(decoders.decode(npy(np.zeros((2, 8, 8, 3), np.uint8)), "application/x-npy", LIMIT)) == 2
    tensors = decoders.decode(npy(np.zeros((4, 3, 32, 32), np.float32)), "application/x-npy", LIMIT)
    assert len(tensors) == 4 and tensors[0].shape == (3, 32, 32)


@pytest.mark.parametrize("body", [b"not npy", npy(np.zeros((2, 2), np.int64)), npy(np.full((3, 4, 4), np.nan))])
def test_bad_npy_is_400(body):
    assert status_of(decoders.decode, body, "application/x-npy", LIMIT)[0] == 400


@pytest.mark.parametrize("ct", ["text/csv", "text/plain", "application/xml"])
def test_unsupported_content_type_is_415(ct):
    code, msg = status_of(decoders.decode, b"a,b", ct, LIMIT)
    assert code == 415 and ct in msg


def test_too_many_images_in_one_request_is_413():
    body = npy(np.zeros((LIMIT.max_images + 1, 5, 5), np.uint8))
    code, msg = status_of(decoders.decode, body, "application/x-npy", LIMIT)
    assert code == 413 and "IMGCLF_MAX_IMAGES_PER_REQUEST" in msg


# ---- the request budget (issue 12): each attack refused from headers, before allocation -----------------------

MB = 1 << 20


def refused(body: bytes, ct: str, limits: RequestLimits = LIMIT, max_mb: int = 100, max_s: float = 2.0):
    """(status, message) of a refusal that must be fast and allocate (RSS and tracemalloc) under max_mb."""
    started = time.monotonic()
    result, rss, traced = hp.peak_memory(lambda: decoders.decode(body, ct, limits))
    seconds = time.monotonic() - started
    assert isinstance(result, ClientError), f"not refused: {result!r}"[:500]
    assert rss < max_mb * MB and traced < max_mb * MB, (rss / MB, traced / MB)
    assert seconds < max_s, seconds
    return result.status_code, result.message


def test_wide_and_short_grayscale_png_is_refused_for_its_aspect_ratio():
    body = hp.wide_short_png(2_000_000, 20)  # 40 MP, inside the pixel limit; ~128 G pixels once resized
    assert len(body) < 100_000
    code, msg = refused(body, "image/png")
    assert code == 413 and "IMGCLF_MAX_ASPECT_RATIO" in msg and "2000000 x 20" in msg


def test_resized_pixels_are_bounded_even_within_the_aspect_ratio():
    limits = RequestLimits(max_aspect_ratio=1000, resize_short_side=256)
    code, msg = refused(hp.png_raw(20_000, 40, bit_depth=8), "image/png", limits)  # 256 x 128,000 once resized
    assert code == 413 and "IMGCLF_MAX_RESIZED_PIXELS" in msg and "32,768,000" in msg


def test_json_batch_of_hundreds_of_1bit_png_bombs_is_refused_before_any_is_decoded():
    body = hp.json_of_bombs(300, 5_000)  # 300 x 25 MP, ~1 MB of JSON
    code, msg = refused(body, "application/json")
    assert code == 413 and "300 images" in msg and "IMGCLF_MAX_IMAGES_PER_REQUEST" in msg


def test_json_batch_under_the_count_is_refused_on_the_summed_pixels_before_decoding():
    body = hp.json_of_bombs(200, 5_000)  # 200 is under the count limit; 5 x 25 MP is over the request sum
    code, msg = refused(body, "application/json")
    assert code == 413 and "IMGCLF_MAX_REQUEST_PIXELS" in msg


def test_request_pixels_are_summed_over_every_image_of_the_request():
    b64 = base64.b64encode(image_bytes("PNG", size=(400, 300))).decode()
    body = json.dumps({"instances": [b64] * 3}).encode()  # 360,000 pixels
    code, msg = refused(body, "application/json", RequestLimits(max_request_pixels=300_000))
    assert code == 413 and "IMGCLF_MAX_REQUEST_PIXELS" in msg


def test_json_lines_are_counted_before_any_line_is_decoded():
    b64 = base64.b64encode(image_bytes()).decode()
    body = "\n".join(json.dumps({"image": b64}) for _ in range(5)).encode()
    code, msg = refused(body, "application/jsonlines", RequestLimits(max_images=4))
    assert code == 413 and "IMGCLF_MAX_IMAGES_PER_REQUEST" in msg


def test_uint8_npy_of_shape_1_by_n_is_refused_for_its_aspect_ratio():
    code, msg = refused(hp.npy_bytes(np.zeros((1, 10_000_000), np.uint8)), "application/x-npy")
    assert code == 413 and "IMGCLF_MAX_ASPECT_RATIO" in msg


@pytest.mark.parametrize("shape", [(1_000_000, 3, 1000, 1000), (2**40,), (3, 2**31, 2**31), (2**62, 2**62)])
def test_npy_header_claiming_a_huge_shape_is_413_without_allocating(shape):
    code, msg = refused(hp.npy_header_only(shape), "application/x-npy")
    assert code == 413 and "IMGCLF_MAX_NPY_BYTES" in msg and "TiB" not in msg


def test_npy_header_disagreeing_with_its_data_is_400():
    code, msg = refused(hp.npy_header_only((4, 3, 32, 32)), "application/x-npy")
    assert code == 400 and "truncated" in msg


@pytest.mark.parametrize("kind", ["[", "{"])
def test_deeply_nested_json_is_400_naming_the_depth_limit(kind):
    code, msg = refused(hp.deep_json(200_000, kind), "application/json")
    assert code == 400 and "IMGCLF_MAX_JSON_DEPTH" in msg


def test_json_depth_scan_is_linear_on_an_unterminated_string_of_escapes():
    started = time.monotonic()
    assert decoders.json_depth(b'["' + b'\\"[' * 2_000_000) == 1
    assert time.monotonic() - started < 2


def test_json_over_its_byte_limit_is_413():
    body = json.dumps({"image": "A" * 2000}).encode()
    code, msg = refused(body, "application/json", RequestLimits(max_json_bytes=1000))
    assert code == 413 and "IMGCLF_MAX_JSON_BYTES" in msg


def test_ico_is_not_an_accepted_format_by_default():
    code, msg = refused(hp.ico_with_png(hp.png_raw(16, 16)), "image/x-icon")
    assert code == 400 and "IMGCLF_IMAGE_FORMATS" in msg


def test_ico_with_a_huge_embedded_png_is_413_inside_open_when_ico_is_allowed():
    limits = RequestLimits(image_formats=("PNG", "ICO"))
    code, msg = refused(hp.ico_with_png(hp.png_raw(20_000, 20_000)), "image/x-icon", limits)
    assert code == 413 and "IMGCLF_MAX_IMAGE_PIXELS" in msg


def test_pillow_bomb_guard_is_on_at_our_limit_while_opening(monkeypatch):
    seen = []
    real_open = Image.open

    def spy(*args, **kwargs):
        seen.append((Image.MAX_IMAGE_PIXELS, kwargs.get("formats")))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    decoders.decode(image_bytes(), "image/png", RequestLimits(max_image_pixels=1_234_567))
    assert seen == [(1_234_567, list(LIMIT.image_formats))]
    assert Image.MAX_IMAGE_PIXELS is not None


def test_gif_of_many_frames_decodes_only_the_first_frame_fast():
    body = hp.gif_frames(1500)
    started = time.monotonic()
    (img,) = decoders.decode(body, "image/gif", LIMIT)
    assert img.size == (16, 16) and time.monotonic() - started < 0.5


def test_tiff_of_many_pages_decodes_the_first_page():
    (img,) = decoders.decode(hp.tiff_pages(300), "image/tiff", LIMIT)
    assert img.mode == "RGB" and np.asarray(img)[0, 0, 0] == 0


def test_png_text_chunks_cost_bounded_memory():
    body = hp.png_text_chunks(300, 64 << 20)  # 300 tEXt chunks and a 64 MB zTXt bomb
    result, rss, traced = hp.peak_memory(lambda: decoders.decode(body, "image/png", LIMIT))
    assert isinstance(result, list) or (isinstance(result, ClientError) and result.status_code == 400), result
    assert rss < 100 * MB and traced < 100 * MB


@pytest.mark.parametrize(("mode", "fmt"), [("P", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("1", "PNG")])
def test_palette_16bit_32bit_float_and_1bit_modes_become_rgb(mode, fmt):
    (img,) = decoders.decode(hp.image(fmt, (50, 40), mode), "image/png", LIMIT)
    assert img.mode == "RGB" and img.size == (50, 40)


def test_cmyk_jpeg_becomes_rgb():
    (img,) = decoders.decode(hp.image("JPEG", (64, 48), "CMYK"), "image/jpeg", LIMIT)
    assert img.mode == "RGB"


@pytest.mark.parametrize("shape", [(0, 8, 8), (8, 0), (0,), (0, 3, 32, 32), (4, 0, 3), ()])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_zero_size_and_scalar_arrays_are_400(shape, dtype):
    code, msg = refused(hp.npy_bytes(np.zeros(shape, dtype)), "application/x-npy")
    assert code == 400


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_tensors_are_400(value):
    a = np.zeros((2, 3, 32, 32), np.float32)
    a[1, 2, 3, 4] = value
    code, msg = refused(hp.npy_bytes(a), "application/x-npy")
    assert code == 400 and "NaN or infinite" in msg


@pytest.mark.parametrize("dtype", [np.int64, np.complex64, np.bool_, np.dtype([("a", "<f4")]), np.dtype("<U3")])
def test_npy_dtypes_off_the_allow_list_are_400_naming_it(dtype):
    code, msg = refused(hp.npy_bytes(np.zeros((3, 4, 4), dtype)), "application/x-npy")
    assert code == 400 and "IMGCLF_NPY_DTYPES" in msg


def test_npy_over_its_ndim_limit_is_400():
    code, msg = refused(hp.npy_bytes(np.zeros((1, 1, 3, 4, 4), np.float32)), "application/x-npy")
    assert code == 400 and "IMGCLF_MAX_NPY_NDIM" in msg


def test_npy_fortran_order_and_big_endian_arrays_decode():
    (img,) = decoders.decode(
        hp.npy_bytes(np.asfortranarray(np.zeros((20, 24, 3), np.uint8))), "application/x-npy", LIMIT
    )
    assert img.size == (24, 20)
    (t,) = decoders.decode(hp.npy_bytes(np.ones((3, 8, 8), ">f8")), "application/x-npy", LIMIT)
    assert t.dtype == np.float32 and t.shape == (3, 8, 8) and float(t.sum()) == 192


def test_unicode_json_keys_are_fine():
    b64 = base64.b64encode(image_bytes()).decode()
    for ensure_ascii in (True, False):
        body = json.dumps(
            {"\u202e\U0001f600\u4e2d\x00": 1, "instances": [{"\ufeff": 2, "b64": b64}]}, ensure_ascii=ensure_ascii
        )
        assert len(decoders.decode(body.encode(), "application/json", LIMIT)) == 1
