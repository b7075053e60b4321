"""Request body + Content-Type -> a list of inputs (PIL RGB images or already-normalised float arrays).

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
TIFF, APNG, WebP) are classified by their first frame; an image over the pixel limit is refused (413) from its
header, before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgclf import images
from imgclf.serving import errors

Input = Image.Image | np.ndarray

IMAGE_TYPES = ["image/jpeg", "image/png", "application/x-image", "application/octet-stream", "image/*"]
JSON_TYPES = ["application/json"]
JSONLINES_TYPES = ["application/jsonlines", "application/x-jsonlines"]
NPY_TYPES = ["application/x-npy"]
SUPPORTED = IMAGE_TYPES + JSON_TYPES + JSONLINES_TYPES + NPY_TYPES
MAX_IMAGES_PER_REQUEST = 256


def media_type(header: str | None) -> str:
    """'Image/JPEG; charset=x' -> 'image/jpeg'; no header means raw bytes (application/octet-stream)."""
    if not header:
        return "application/octet-stream"
    return header.split(";", 1)[0].strip().lower() or "application/octet-stream"


def is_supported(content_type: str) -> bool:
    ct = media_type(content_type)
    return ct in SUPPORTED or ct.startswith("image/")


def decode(body: Any, content_type: str | None, max_pixels: int) -> list[Input]:
    """Decode one request. Raises errors.ClientError (400/413/415) for anything a client got wrong."""
    ct = media_type(content_type)
    if not is_supported(ct):
        raise errors.unsupported_media_type(ct, SUPPORTED)
    if isinstance(body, (dict, list)):  # TorchServe may hand over already-parsed JSON
        inputs = _from_json_document(body, max_pixels)
    else:
        if isinstance(body, str):
            body = body.encode()
        if body is None or len(body) == 0:
            raise errors.bad_request("Empty request body: send one image, JSON with base64 images, or an .npy array.")
        body = bytes(body)
        if ct in JSON_TYPES or ct in JSONLINES_TYPES:
            inputs = _from_json(body, max_pixels)
        elif ct in NPY_TYPES:
            inputs = _from_npy(body)
        else:
            inputs = [decode_image(body, max_pixels)]
    if not inputs:
        raise errors.bad_request("The request holds no images.")
    if len(inputs) > MAX_IMAGES_PER_REQUEST:
        raise errors.payload_too_large(
            f"{len(inputs)} images in one request; at most {MAX_IMAGES_PER_REQUEST}. Split it into several requests."
        )
    return inputs


# ---- images ---------------------------------------------------------------------------------------------------


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> RGB image, refusing bombs from the header and truncated files on full decode."""
    if not data:
        raise errors.bad_request("Empty image.")
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our check below, with the real size
    try:
        img = Image.open(io.BytesIO(data))  # parses the header only: no pixel is decoded or allocated yet
    except UnidentifiedImageError:
        raise errors.bad_request(
            f"The body ({len(data)} bytes, starting {data[:8]!r}) is not an image Pillow can read."
        ) from None
    except Image.DecompressionBombError:  # Pillow's own check (2x its global limit) fired first
        raise errors.payload_too_large(_bomb_message(None, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise errors.bad_request(f"Corrupt image header: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    width, height = img.size
    if width * height > max_pixels:
        raise errors.payload_too_large(_bomb_message((width, height), max_pixels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked above, against our limit
        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated / multi-frame: the first frame is classified
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise errors.bad_request(f"Corrupt or truncated {img.format} image: {exc}") from None
    return images.to_rgb(img)


def _bomb_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    what = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else "over the pixel limit"
    return f"Image is {what}; the limit is {max_pixels:,} pixels (IMGCLF_MAX_IMAGE_PIXELS). Resize it before sending."


# ---- JSON -----------------------------------------------------------------------------------------------------


def _from_json(body: bytes, max_pixels: int) -> list[Input]:
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
        documents = []
        for n, line in enumerate(lines, 1):
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise errors.bad_request(f"Malformed JSON on line {n}: {exc}") from None
    inputs: list[Input] = []
    for doc in documents:
        inputs.extend(_from_json_document(doc, max_pixels))
    return inputs


_JSON_SHAPE = 'Expected {"image": "<base64>"}, {"instances": ["<base64>", ...]} or a base64 string.'


def _refuse_url(obj: dict) -> None:
    for key in ("url", "uri", "image_url", "s3_uri"):
        if key in obj:
            raise errors.bad_request(
                f'JSON field "{key}" is not supported: the server never fetches URLs. '
                'Send the image bytes base64-encoded as {"image": "<base64>"}.'
            )


def _from_json_document(doc: Any, max_pixels: int) -> list[Input]:
    if isinstance(doc, str):
        return [decode_image(_b64(doc), max_pixels)]
    if isinstance(doc, dict):
        _refuse_url(doc)
        if "instances" in doc:
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise errors.bad_request(f'"instances" must be a list. {_JSON_SHAPE}')
            return [_from_instance(item, max_pixels) for item in instances]
        for key in ("image", "b64", "data"):
            if key in doc:
                if not isinstance(doc[key], str):
                    raise errors.bad_request(f'"{key}" must be a base64 string. {_JSON_SHAPE}')
                return [decode_image(_b64(doc[key]), max_pixels)]
        raise errors.bad_request(f"JSON object has none of the fields image/instances. {_JSON_SHAPE}")
    if isinstance(doc, list):
        return [_from_instance(item, max_pixels) for item in doc]
    raise errors.bad_request(f"JSON {type(doc).__name__} is not an image. {_JSON_SHAPE}")


def _from_instance(item: Any, max_pixels: int) -> Input:
    if isinstance(item, str):
        return decode_image(_b64(item), max_pixels)
    if isinstance(item, dict):
        _refuse_url(item)
        for key in ("image", "b64", "data"):
            if isinstance(item.get(key), str):
                return decode_image(_b64(item[key]), max_pixels)
    raise errors.bad_request(f"An instance is not a base64 image string or {{'image': '<base64>'}}. {_JSON_SHAPE}")


def _b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # data URI: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.bad_request(f"Malformed base64 image: {exc}") from None


# ---- numpy ----------------------------------------------------------------------------------------------------


def _from_npy(body: bytes) -> list[Input]:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise errors.bad_request(f"Body is not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise errors.bad_request("Body is an .npz archive; send one .npy array.")
    if array.dtype == np.uint8:
        if array.ndim == 2:
            return [Image.fromarray(array, "L").convert("RGB")]
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
            return [_array_image(array)]
        if array.ndim == 3:
            return [Image.fromarray(a, "L").convert("RGB") for a in array]
        if array.ndim == 4 and array.shape[-1] in (1, 3, 4):
            return [_array_image(a) for a in array]
    elif np.issubdtype(array.dtype, np.floating):
        if array.ndim == 3:
            array = array[None]
        if array.ndim == 4 and array.shape[1] == 3:
            if not np.isfinite(array).all():
                raise errors.bad_request("The .npy array holds NaN or infinite values.")
            return [a.astype(np.float32) for a in array]
    raise errors.bad_request(
        f"Unsupported .npy array {array.dtype} {array.shape}: send uint8 images (H, W[, C]) / (N, H, W[, C]) "
        "or float32 normalised tensors (3, S, S) / (N, 3, S, S)."
    )


def _array_image(a: np.ndarray) -> Image.Image:
    if a.shape[-1] == 1:
        return Image.fromarray(a[..., 0], "L").convert("RGB")
    return Image.fromarray(a, "RGB" if a.shape[-1] == 3 else "RGBA").convert("RGB")
