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
from PIL import Image
from support.handler_calls import image_bytes

from imgclf.serving import decoders
from imgclf.serving.errors import ClientError

pytestmark = pytest.mark.unit

LIMIT = 40_000_000


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
    assert code == 413 and "20000 x 20000" in msg
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
    body = npy(np.zeros((decoders.MAX_IMAGES_PER_REQUEST + 1, 5, 5), np.uint8))
    assert status_of(decoders.decode, body, "application/x-npy", LIMIT)[0] == 413
