"""Hostile request bodies (issue 12), built small: each is a few KB to a few MB on the wire and claims far more.

Shared by the unit tests (tests/unit/serving/test_decoders.py), the in-process fuzz tier and the container fuzz
tier (tests/fuzz/). Every generator streams what it declares (rows compressed one by one), so building a
"20,000 x 20,000" PNG never holds its pixels. `CLASSES` maps a class name to a generator of (body, content type)
from a `random.Random`; `VALID` marks the classes whose bodies are ordinary images that must be answered 200.
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(
    width: int, height: int, bit_depth: int = 1, color_type: int = 0, extra: list[bytes] | None = None
) -> bytes:
    """A valid PNG of width x height zero pixels (grey 1-bit by default), rows compressed one at a time."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = [png_chunk(b"IHDR", ihdr)]
    if color_type == 3:
        chunks.append(png_chunk(b"PLTE", bytes(range(256)) * 3))
    chunks += list(extra or [])
    chunks += [png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")]
    return PNG_MAGIC + b"".join(chunks)


def image(fmt: str = "PNG", size=(40, 30), mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """An ordinary image (random pixels) in any Pillow mode / format."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
        if mode == "I":
            img = img.convert("I")
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w), dtype=np.float32) * 255)
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def wide_short_png(width: int = 2_000_000, height: int = 20) -> bytes:
    """8-bit grey, very wide, a few rows: inside a 40 MP limit, gigantic once the short side is resized to 256."""
    return png_raw(width, height, bit_depth=8)


def json_of_bombs(n: int = 300, side: int = 5_000) -> bytes:
    """A JSON batch of n base64 1-bit PNGs of side x side zeros (~3 KB each, 25 MP each decoded)."""
    b64 = base64.b64encode(png_raw(side, side)).decode()
    return json.dumps({"instances": [b64] * n}).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"\0" * 64) -> bytes:
    """An .npy whose header claims `shape` followed by a few bytes: np.load allocates the claimed shape first."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def deep_json(depth: int = 100_000, kind: str = "[") -> bytes:
    close = {"[": "]", "{": "}"}[kind]
    if kind == "{":
        return ('{"a":' * depth + "1" + close * depth).encode()
    return (kind * depth + close * depth).encode()


def ico_with_png(png: bytes) -> bytes:
    """A one-entry .ico whose image is the given PNG (Pillow decodes it inside Image.open)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def gif_frames(n: int, size=(16, 16)) -> bytes:
    frames = [Image.new("P", size, i % 256) for i in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=10)
    return buf.getvalue()


def tiff_pages(n: int, size=(16, 16)) -> bytes:
    pages = [Image.new("L", size, i % 256) for i in range(n)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def png_text_chunks(n: int = 200, text_bytes: int = 1 << 20) -> bytes:
    """A small PNG with n tEXt chunks plus one zTXt of text_bytes zeros compressed (Pillow caps text memory)."""
    extra = [png_chunk(b"tEXt", b"k%d\0" % i + b"v" * 1000) for i in range(n)]
    comp, block = zlib.compressobj(9), b"\0" * (1 << 20)
    ztxt = b"".join(comp.compress(block) for _ in range(max(1, text_bytes >> 20))) + comp.flush()
    extra.append(png_chunk(b"zTXt", b"bomb\0\0" + ztxt))
    return png_raw(32, 32, bit_depth=8, color_type=2, extra=extra)


# ---- classes: name -> generator(rng) -> (body, content type) ------------------------------------------------

Gen = Callable[[random.Random], tuple[bytes, str]]


def _wide_short(rng: random.Random) -> tuple[bytes, str]:
    h = rng.randint(1, 40)
    return wide_short_png(rng.randint(200_000, 40_000_000 // h), h), "image/png"


def _json_bombs(rng: random.Random) -> tuple[bytes, str]:
    return json_of_bombs(rng.randint(100, 400), rng.randint(3_000, 6_000)), "application/json"


def _npy_wide(rng: random.Random) -> tuple[bytes, str]:
    return npy_bytes(np.zeros((1, rng.randint(100_000, 20_000_000)), np.uint8)), "application/x-npy"


def _npy_huge_header(rng: random.Random) -> tuple[bytes, str]:
    shape = rng.choice(
        [
            (1_000_000, 3, 1000, 1000),
            (2**40,),
            (rng.randint(1, 10**6), rng.randint(1, 10**6), 3),
            (3, 2**31, 2**31),
            (2**62, 2**62),
        ]
    )
    return npy_header_only(shape, rng.choice(["<f4", "|u1", "<f8"])), "application/x-npy"


def _deep_json(rng: random.Random) -> tuple[bytes, str]:
    return deep_json(rng.randint(1_000, 2_000_000), rng.choice("[{")), "application/json"


def _ico(rng: random.Random) -> tuple[bytes, str]:
    side = rng.randint(8_000, 20_000)
    return ico_with_png(png_raw(side, side)), rng.choice(["image/x-icon", "application/octet-stream"])


def _gif_frames(rng: random.Random) -> tuple[bytes, str]:
    return gif_frames(rng.randint(2, 2000)), "image/gif"


def _tiff_pages(rng: random.Random) -> tuple[bytes, str]:
    return tiff_pages(rng.randint(2, 500)), "image/tiff"


def _png_text(rng: random.Random) -> tuple[bytes, str]:
    return png_text_chunks(rng.randint(1, 500), rng.randint(1, 64) << 20), "image/png"


def _modes(rng: random.Random) -> tuple[bytes, str]:
    mode, fmt = rng.choice([("P", "PNG"), ("I;16", "PNG"), ("F", "TIFF"), ("I", "TIFF"), ("1", "PNG"), ("LA", "PNG")])
    size = (rng.randint(16, 600), rng.randint(16, 600))
    return image(fmt, size, mode, seed=rng.randint(0, 10**6)), "image/png"


def _cmyk_jpeg(rng: random.Random) -> tuple[bytes, str]:
    return image("JPEG", (rng.randint(16, 800), rng.randint(16, 800)), "CMYK", seed=rng.randint(0, 10**6)), "image/jpeg"


def _zero_size(rng: random.Random) -> tuple[bytes, str]:
    shape = rng.choice([(0, 8, 8), (8, 0), (0,), (0, 3, 32, 32), (4, 0, 3), ()])
    return npy_bytes(np.zeros(shape, rng.choice([np.uint8, np.float32]))), "application/x-npy"


def _nan_inf(rng: random.Random) -> tuple[bytes, str]:
    a = np.zeros((rng.randint(1, 4), 3, 32, 32), np.float32)
    a.flat[rng.randrange(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return npy_bytes(a), "application/x-npy"


def _unicode_json(rng: random.Random) -> tuple[bytes, str]:
    b64 = base64.b64encode(image("PNG", (24, 24), seed=rng.randint(0, 10**6))).decode()
    key = "".join(chr(rng.choice([0x1F600, 0x4E2D, 0x202E, 0xFEFF, 0x10FFFF, 0x0])) for _ in range(rng.randint(1, 9)))
    doc = {key: "x", "image": b64} if rng.random() < 0.5 else {"instances": [{key: 1, "b64": b64}]}
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode(), "application/json"


def _random_bytes(rng: random.Random) -> tuple[bytes, str]:
    body = rng.randbytes(rng.randint(0, 4096))
    return body, rng.choice(["image/png", "image/jpeg", "application/json", "application/x-npy", "image/tiff"])


def _mutated_image(rng: random.Random) -> tuple[bytes, str]:
    body = bytearray(image(rng.choice(["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]), (64, 48)))
    for _ in range(rng.randint(1, 20)):
        body[rng.randrange(len(body))] = rng.randrange(256)
    return bytes(body), "image/png"


def _valid(rng: random.Random) -> tuple[bytes, str]:
    fmt = rng.choice(["PNG", "JPEG", "WEBP", "BMP"])
    size = (rng.randint(16, 640), rng.randint(16, 640))
    return image(fmt, size, seed=rng.randint(0, 10**6)), f"image/{fmt.lower()}"


def _valid_json(rng: random.Random) -> tuple[bytes, str]:
    b64 = base64.b64encode(image("PNG", (rng.randint(8, 200), rng.randint(8, 200)))).decode()
    return json.dumps({"instances": [b64] * rng.randint(1, 8)}).encode(), "application/json"


CLASSES: dict[str, Gen] = {
    "wide_short_png": _wide_short,
    "json_batch_of_bombs": _json_bombs,
    "npy_uint8_1xN": _npy_wide,
    "npy_huge_header": _npy_huge_header,
    "deep_json": _deep_json,
    "ico_huge_png": _ico,
    "gif_frames": _gif_frames,
    "tiff_pages": _tiff_pages,
    "png_text_chunks": _png_text,
    "palette_16bit_float_modes": _modes,
    "cmyk_jpeg": _cmyk_jpeg,
    "npy_zero_size": _zero_size,
    "npy_nan_inf": _nan_inf,
    "json_unicode_keys": _unicode_json,
    "random_bytes": _random_bytes,
    "mutated_image": _mutated_image,
    "valid_image": _valid,
    "valid_json_batch": _valid_json,
}
# Classes whose every body is a well-formed request within the default limits: the answer must be 200.
VALID = {
    "valid_image",
    "valid_json_batch",
    "cmyk_jpeg",
    "json_unicode_keys",
    "gif_frames",
    "tiff_pages",
    "palette_16bit_float_modes",
}
# Classes that must always be refused (4xx) under the default limits.
REFUSED = {
    "wide_short_png",
    "json_batch_of_bombs",
    "npy_uint8_1xN",
    "npy_huge_header",
    "deep_json",
    "ico_huge_png",
    "npy_zero_size",
    "npy_nan_inf",
}


# ---- measuring one call ---------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_memory(fn: Callable[[], object]) -> tuple[object, int, int]:
    """(result or the exception raised, peak RSS growth in bytes, tracemalloc peak in bytes) of fn().

    RSS: the kernel's high-water mark (VmHWM), reset first through /proc/self/clear_refs, so it covers Pillow's
    and numpy's C allocations too; tracemalloc covers Python objects and numpy. Linux only."""
    import gc
    import tracemalloc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = _status_kb("VmRSS")
    tracemalloc.start()
    try:
        try:
            result: object = fn()
        except Exception as exc:  # noqa: BLE001 - the caller decides what is acceptable
            result = exc
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, max(0, _status_kb("VmHWM") - before) * 1024, traced_peak
