"""Request body + Content-Type -> a list of inputs (PIL RGB images or already-normalised float arrays).

(~460 lines: every content type charges the same per-request Budget before it allocates; kept in one module so
"what does a bad PNG / deep JSON / huge .npy return" is answered in one file.)

Accepted Content-Types:

    image/jpeg, image/png, image/* (any type Pillow reads), application/x-image, application/octet-stream
        one image in the body
    application/json
        {"image": "<base64>"} or {"instances": ["<base64>" | {"image": "<base64>"} | {"b64": "<base64>"}, ...]}
        or a bare "<base64>" string; several such documents on separate lines are several records
        (batch transform with SplitType=Line). A "url" field is refused with 400: the server never fetches URLs.
    application/jsonlines, application/x-jsonlines
        one JSON document as above per line
    application/x-npy
        uint8: (H, W), (H, W, C) with C in 1/3/4, (N, H, W) or (N, H, W, C) images, preprocessed like any image;
        float: (3, S, S) or (N, 3, S, S) tensors already resized and normalised for the model (S = image_size)

Image rules (stated, not guessed): greyscale, palette, CMYK and alpha images are converted to RGB (alpha dropped,
as in training's `open_rgb`); 16-bit images are scaled to 8 bit (v / 256); animated / multi-frame images (GIF,
TIFF, APNG, WebP) are classified by their first frame (the only frame decoded).

The request budget (imgclf.serving.limits.RequestLimits): every decoder checks what a payload will cost from what
it declares, before allocating anything proportional to it, and refuses with 413 (too big) or 400 (malformed)
naming the limit and its IMGCLF_* variable. In order: JSON body size and nesting depth (a bracket scan, before
json.loads), the instance count (before any instance is decoded), then every image's header (Pillow format
allow-list, pixels, aspect ratio, pixels after the model's resize step) and the pixels of the whole request summed,
and only then the pixels; an .npy's header (dtype, ndim, shape, byte count) before the array, which is then a
view of the body, never a second allocation. Pillow's own bomb guard stays on, at our per-image limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image, UnidentifiedImageError

from imgclf import images
from imgclf.serving import errors
from imgclf.serving.limits import ENV, RequestLimits

Input = Image.Image | np.ndarray

IMAGE_TYPES = ["image/jpeg", "image/png", "application/x-image", "application/octet-stream", "image/*"]
JSON_TYPES = ["application/json"]
JSONLINES_TYPES = ["application/jsonlines", "application/x-jsonlines"]
NPY_TYPES = ["application/x-npy"]
SUPPORTED = IMAGE_TYPES + JSON_TYPES + JSONLINES_TYPES + NPY_TYPES


def media_type(header: str | None) -> str:
    """'Image/JPEG; charset=x' -> 'image/jpeg'; no header means raw bytes (application/octet-stream)."""
    if not header:
        return "application/octet-stream"
    return header.split(";", 1)[0].strip().lower() or "application/octet-stream"


def is_supported(content_type: str) -> bool:
    ct = media_type(content_type)
    return ct in SUPPORTED or ct.startswith("image/")


def decode(body: Any, content_type: str | None, limits: RequestLimits, draft: Draft | None = None) -> list[Input]:
    """Decode one request within `limits`. Raises errors.ClientError (400/413/415) for anything a client got
    wrong or anything over a limit, before the memory it would cost is allocated. `draft` (IMGCLF_JPEG_DRAFT on:
    `Preprocessor.apply_draft`) sees every admitted image after its header checks and before its pixels."""
    ct = media_type(content_type)
    if not is_supported(ct):
        raise errors.unsupported_media_type(ct, SUPPORTED)
    budget = Budget(limits, draft=draft)
    if isinstance(body, (dict, list)):  # TorchServe may hand over already-parsed JSON
        inputs = _from_documents([body], budget)
    else:
        if isinstance(body, str):
            body = body.encode()
        if body is None or len(body) == 0:
            raise errors.bad_request("Empty request body: send one image, JSON with base64 images, or an .npy array.")
        body = bytes(body)
        if ct in JSON_TYPES or ct in JSONLINES_TYPES:
            inputs = _from_json(body, budget)
        elif ct in NPY_TYPES:
            inputs = _from_npy(body, budget)
        else:
            inputs = decode_images([body], budget)
    if not inputs:
        raise errors.bad_request("The request holds no images.")
    return inputs


# ---- the budget -----------------------------------------------------------------------------------------------


def _over(what: str, field: str, limit: Any, fix: str) -> str:
    shown = f"{limit:,}" if isinstance(limit, int) else f"{limit:g}" if isinstance(limit, float) else str(limit)
    return f"{what}; the limit is {shown} ({ENV[field]}). {fix}"


Draft = Callable[[Image.Image], Any]  # an opened, not yet loaded image -> (may ask libjpeg for a reduced decode)


@dataclass
class Budget:
    """What the request has been granted so far: images counted, pixels summed (from headers, before decoding);
    and the draft hook its images pass through before their pixels are decoded (the budget still charges the
    full size the header declares)."""

    limits: RequestLimits
    images: int = 0
    pixels: int = 0
    draft: Draft | None = None

    def count(self, n: int) -> None:
        """Refuse a request of n images before any of them is decoded."""
        if n > self.limits.max_images:
            raise errors.payload_too_large(
                _over(f"{n} images in one request", "max_images", self.limits.max_images, "Split it into requests.")
            )

    def admit(self, width: int, height: int, what: str = "Image") -> None:
        """One image of width x height, from its header: per-image, resize-step and request-sum limits."""
        lim = self.limits
        if width < 1 or height < 1:
            raise errors.bad_request(f"{what} is {width} x {height}: an image needs at least one pixel.")
        pixels = width * height
        size = f"{what} is {width} x {height} = {pixels:,} pixels"
        if pixels > lim.max_image_pixels:
            raise errors.payload_too_large(
                _over(size, "max_image_pixels", lim.max_image_pixels, "Resize it before sending.")
            )
        ratio = max(width, height) / min(width, height)
        if ratio > lim.max_aspect_ratio:
            raise errors.payload_too_large(
                _over(
                    f"{what} is {width} x {height}, aspect ratio {ratio:,.0f}:1 (the resize step scales its short "
                    "side up to the model's size)",
                    "max_aspect_ratio",
                    lim.max_aspect_ratio,
                    "Crop it to a less extreme shape (or tile it) before sending.",
                )
            )
        resized = lim.resized_pixels(width, height)
        if resized is not None and resized > lim.max_resized_pixels:
            raise errors.payload_too_large(
                _over(
                    f"{what} is {width} x {height}: resized to a short side of {lim.resize_short_side} it would be "
                    f"{resized:,} pixels",
                    "max_resized_pixels",
                    lim.max_resized_pixels,
                    "Crop it to a less extreme aspect ratio before sending.",
                )
            )
        self.images += 1
        self.pixels += pixels
        if self.pixels > lim.max_request_pixels:
            raise errors.payload_too_large(
                _over(
                    f"The images of this request hold {self.pixels:,} pixels or more",
                    "max_request_pixels",
                    lim.max_request_pixels,
                    "Send fewer or smaller images per request.",
                )
            )


# ---- images ---------------------------------------------------------------------------------------------------


def decode_image(data: bytes, limits: RequestLimits, draft: Draft | None = None) -> Image.Image:
    """One image's bytes -> RGB image within `limits` (a request of one image)."""
    return decode_images([data], Budget(limits, draft=draft))[0]


def decode_images(blobs: list[bytes], budget: Budget) -> list[Image.Image]:
    """Count, then open every header and charge it to the budget, and only then decode the pixels."""
    budget.count(len(blobs))
    opened: list[Image.Image | None] = [open_image(data, budget) for data in blobs]
    out = []
    for i, img in enumerate(opened):
        if budget.draft is not None:
            budget.draft(img)
        out.append(_load_rgb(img))
        opened[i] = None  # the source image goes as soon as its RGB copy exists
    return out


def open_image(data: bytes, budget: Budget) -> Image.Image:
    """Parse one image's header (Pillow's allow-listed formats only, its bomb guard at our limit) and admit it."""
    limits = budget.limits
    if not data:
        raise errors.bad_request("Empty image.")
    # Pillow's own guard, on and at our limit: its warning (over the limit) is an error here, so formats that
    # decode pixels inside Image.open (an ICO's embedded PNG) stop before allocating them. Never None.
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(limits.image_formats))
        except UnidentifiedImageError:
            raise errors.bad_request(
                f"The body ({len(data)} bytes, starting {data[:8]!r}) is not an image in an accepted format "
                f"({', '.join(limits.image_formats)}; {ENV['image_formats']}). Send a JPEG or PNG."
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            what = f"Image is {int(found.group(1)):,} pixels" if found else "Image is over the pixel limit"
            raise errors.payload_too_large(
                _over(what, "max_image_pixels", limits.max_image_pixels, "Resize it before sending.")
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise errors.bad_request(f"Corrupt image header: {exc}") from None
    budget.admit(*img.size)
    return img


def _load_rgb(img: Image.Image) -> Image.Image:
    """Decode the first frame (the only one ever decoded) and convert it to RGB; the source is closed."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise errors.bad_request(f"Corrupt or truncated {img.format} image: {exc}") from None
    try:
        return images.to_rgb(img)
    finally:
        img.close()


# ---- JSON -----------------------------------------------------------------------------------------------------

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_BRACKET_STEP = np.zeros(256, np.int8)  # byte -> +1 for [ and {, -1 for ] and }, 0 otherwise
_BRACKET_STEP[list(b"[{")], _BRACKET_STEP[list(b"]}")] = 1, -1


def json_depth(body: bytes) -> int:
    """Deepest [ / { nesting of a JSON text without parsing it: vectorised, linear, no recursion, no regex.

    Brackets inside strings do not count: a quote opens or closes a string unless an odd run of backslashes
    precedes it. Memory: ~8 bytes per body byte when the body has backslashes, a few bytes per bracket otherwise.
    """
    a = np.frombuffer(body, np.uint8)
    quotes = np.flatnonzero(a == _QUOTE)
    backslash = a == _BACKSLASH
    if quotes.size and backslash.any():
        # last_plain[i]: the last index <= i that is not a backslash (-1 if none)
        last_plain = np.where(backslash, -1, np.arange(a.size))
        np.maximum.accumulate(last_plain, out=last_plain)
        before = quotes - 1
        run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)
        quotes = quotes[run % 2 == 0]
        del last_plain, before, run
    steps = _BRACKET_STEP[a]
    brackets = np.flatnonzero(steps)
    if quotes.size:
        brackets = brackets[np.searchsorted(quotes, brackets) % 2 == 0]  # an even number of quotes before it
    return int(np.cumsum(steps[brackets], dtype=np.int32).max(initial=0))


def _from_json(body: bytes, budget: Budget) -> list[Input]:
    limits = budget.limits
    if len(body) > limits.max_json_bytes:
        raise errors.payload_too_large(
            _over(
                f"The JSON body is {len(body):,} bytes",
                "max_json_bytes",
                limits.max_json_bytes,
                "Send fewer images per request, or the image bytes themselves (Content-Type image/jpeg).",
            )
        )
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise errors.bad_request(
            _over(
                f"The JSON body is nested {depth} deep",
                "max_json_depth",
                limits.max_json_depth,
                'Send {"instances": ["<base64>", ...]} (3 deep).',
            )
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.bad_request("JSON body is not valid UTF-8.") from None
    try:
        documents = [json.loads(text)]
    except json.JSONDecodeError as whole_error:
        # JSON lines (batch transform SplitType=Line, or application/jsonlines): one document per line.
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise errors.bad_request(f"Malformed JSON: {whole_error}") from None
        budget.count(len(lines))  # every line holds at least one image
        documents = []
        for n, line in enumerate(lines, 1):
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise errors.bad_request(f"Malformed JSON on line {n}: {exc}") from None
    except RecursionError:  # under the depth limit this cannot happen; never a 500 if it does
        raise errors.bad_request("The JSON body is nested too deep.") from None
    return _from_documents(documents, budget)


def _from_documents(documents: list[Any], budget: Budget) -> list[Input]:
    """Every base64 instance of every document is found and counted before any is decoded."""
    strings: list[str] = []
    for doc in documents:
        strings.extend(_instance_strings(doc, budget))
        budget.count(len(strings))
    return decode_images([_b64(s) for s in strings], budget)


_JSON_SHAPE = 'Expected {"image": "<base64>"}, {"instances": ["<base64>", ...]} or a base64 string.'


def _refuse_url(obj: dict) -> None:
    for key in ("url", "uri", "image_url", "s3_uri"):
        if key in obj:
            raise errors.bad_request(
                f'JSON field "{key}" is not supported: the server never fetches URLs. '
                'Send the image bytes base64-encoded as {"image": "<base64>"}.'
            )


def _instance_strings(doc: Any, budget: Budget) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        _refuse_url(doc)
        if "instances" in doc:
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise errors.bad_request(f'"instances" must be a list. {_JSON_SHAPE}')
            budget.count(len(instances))
            return [_instance_string(item) for item in instances]
        for key in ("image", "b64", "data"):
            if key in doc:
                if not isinstance(doc[key], str):
                    raise errors.bad_request(f'"{key}" must be a base64 string. {_JSON_SHAPE}')
                return [doc[key]]
        raise errors.bad_request(f"JSON object has none of the fields image/instances. {_JSON_SHAPE}")
    if isinstance(doc, list):
        budget.count(len(doc))
        return [_instance_string(item) for item in doc]
    raise errors.bad_request(f"JSON {type(doc).__name__} is not an image. {_JSON_SHAPE}")


def _instance_string(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        _refuse_url(item)
        for key in ("image", "b64", "data"):
            if isinstance(item.get(key), str):
                return item[key]
    raise errors.bad_request(f"An instance is not a base64 image string or {{'image': '<base64>'}}. {_JSON_SHAPE}")


def _b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # data URI: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.bad_request(f"Malformed base64 image: {exc}") from None


# ---- numpy ----------------------------------------------------------------------------------------------------

_NPY_SHAPES = (
    "send uint8 images (H, W[, C]) / (N, H, W[, C]) with C in 1/3/4, or normalised float tensors (3, S, S) / "
    "(N, 3, S, S)"
)


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from the .npy header, with nothing allocated for the data."""
    if body[:2] == b"PK":
        raise errors.bad_request("Body is an .npz archive; send one .npy array.")
    fp = io.BytesIO(body)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise errors.bad_request(f"Body is not a readable .npy array: {exc}") from None
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype), fp.tell()


def _from_npy(body: bytes, budget: Budget) -> list[Input]:
    limits = budget.limits
    shape, fortran, dtype, offset = _npy_header(body)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.name not in limits.npy_dtypes:
        raise errors.bad_request(
            f"Unsupported .npy dtype {dtype.str} ({dtype.name}); accepted: {', '.join(limits.npy_dtypes)} "
            f"({ENV['npy_dtypes']}): {_NPY_SHAPES}."
        )
    if len(shape) > limits.max_npy_ndim:
        raise errors.bad_request(
            _over(f"The .npy array has {len(shape)} dimensions", "max_npy_ndim", limits.max_npy_ndim, _NPY_SHAPES + ".")
        )
    if any(n < 1 for n in shape):
        raise errors.bad_request(f"The .npy array {shape} is empty: {_NPY_SHAPES}.")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_npy_bytes:
        raise errors.payload_too_large(
            _over(
                f"The .npy array {dtype.name} {shape} is {nbytes:,} bytes",
                "max_npy_bytes",
                limits.max_npy_bytes,
                "Send fewer or smaller arrays per request.",
            )
        )
    if len(body) - offset != nbytes:
        raise errors.bad_request(
            f"The .npy header declares {dtype.name} {shape} ({nbytes:,} bytes of data) but the body holds "
            f"{len(body) - offset:,}: truncated or padded."
        )
    ndim = len(shape)
    if dtype == np.uint8:
        if ndim == 2 or (ndim == 3 and shape[-1] in (1, 3, 4)):
            n, (h, w) = 1, shape[:2]
        elif ndim == 3 or (ndim == 4 and shape[-1] in (1, 3, 4)):
            n, (h, w) = shape[0], shape[1:3]
        else:
            raise errors.bad_request(f"Unsupported .npy array uint8 {shape}: {_NPY_SHAPES}.")
        budget.count(n)
        for _ in range(n):
            budget.admit(w, h, "An .npy image")
    elif ndim in (3, 4) and shape[-3] == 3:
        budget.count(shape[0] if ndim == 4 else 1)
    else:
        raise errors.bad_request(f"Unsupported .npy array {dtype.name} {shape}: {_NPY_SHAPES}.")
    # A view of the body: nothing is allocated for the data (np.load would allocate the declared shape first).
    array = np.frombuffer(body, dtype, count=math.prod(shape), offset=offset).reshape(
        shape, order="F" if fortran else "C"
    )
    if dtype == np.uint8:
        if ndim == 2:
            return [Image.fromarray(array, "L").convert("RGB")]
        if ndim == 3 and shape[-1] in (1, 3, 4):
            return [_array_image(array)]
        if ndim == 3:
            return [Image.fromarray(a, "L").convert("RGB") for a in array]
        return [_array_image(a) for a in array]
    if ndim == 3:
        array = array[None]
    if not np.isfinite(array).all():
        raise errors.bad_request("The .npy array holds NaN or infinite values.")
    return [a.astype(np.float32) for a in array]


def _array_image(a: np.ndarray) -> Image.Image:
    if a.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(a[..., 0]), "L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[-1] == 3 else "RGBA").convert("RGB")
