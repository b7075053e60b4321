"""The per-request memory budget: what one request may cost a worker, checked from headers before allocation.

The bound. One request costs a worker at most about 1 GiB (`REQUEST_BUDGET_BYTES`) on top of its resident model,
whatever the request holds. The decoders enforce it from what a payload *declares* (image headers, the `.npy`
header, the JSON text) before anything proportional to the declared size is allocated:

    held decoded images      3 B x max_request_pixels          (every image is RGB once decoded)     192 MB
    the image being decoded  13 B x max_image_pixels           (worst mode: 16-bit -> 32-bit -> 8-bit
                                                                grey -> RGB, source still referenced)  520 MB
    the resize step          6 B x max_resized_pixels          (RGB output + Pillow's two-pass buffer)  96 MB
    request body copies      ~4 x body (MMS bytes, base64 text and decoded bytes; <= 8 MiB JSON)      ~32 MB
    JSON objects             <= ~25 x max_json_bytes           (worst case: "{}," repeated)            ~200 MB
                                                                 (JSON and images are not both at their
                                                                 maximum: the images are inside the body)
    .npy                     2 x max_npy_bytes                 (the array is a view of the body;
                                                                 a float64 -> float32 copy at most)      256 MB

    sum of the image rows: 192 + 520 + 96 + 32 = 840 MB < 1 GiB; the .npy and JSON rows replace the image rows
    (an .npy is decoded without Pillow's transient copies; see `budget_bytes`).

So each default below is derived from the budget, not picked on its own; raise one and lower another to move the
budget around (the `IMGCLF_*` variable of each limit is in `ENV`, read by
`imgclf.serving.environment.request_limits_from_env`). The model's own tensors are outside this budget: at most
`max_images` x 3 x S x S float32 rows (S = image_size; 154 MB for 256 images at 224 px).

Frames: exactly one frame of an animated / multi-frame image (GIF, TIFF, APNG, WebP) is ever decoded, the first;
the frame count is never computed (counting walks the whole file), so `FRAMES_DECODED` is 1 and not a knob.

Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) stays on, set to `max_image_pixels`, with its
warning turned into an error while we open an image: formats that decode pixels inside `Image.open` (ICO with an
embedded PNG) are stopped by Pillow at our limit, before the pixels are allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

REQUEST_BUDGET_BYTES = 1 << 30  # 1 GiB per request, the bound every default below is derived from
FRAMES_DECODED = 1  # frames of a multi-frame image that are decoded (the first); see the module docstring

# Bytes a decoder may hold per pixel (see the table above).
HELD_BYTES_PER_PIXEL = 3  # RGB
TRANSIENT_BYTES_PER_PIXEL = 13  # I;16 source (2) + I (4) + scaled I (4) + L (1) + RGB (3) - the RGB already counted
RESIZE_BYTES_PER_PIXEL = 6  # RGB resize output + Pillow's intermediate of its two-pass resize

DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # ICO, PSD, EPS, ... are refused (see ENV)
DEFAULT_DTYPES = ("uint8", "float16", "float32", "float64")

# limit field -> the environment variable that sets it
ENV = {
    "max_images": "IMGCLF_MAX_IMAGES_PER_REQUEST",
    "max_image_pixels": "IMGCLF_MAX_IMAGE_PIXELS",
    "max_request_pixels": "IMGCLF_MAX_REQUEST_PIXELS",
    "max_aspect_ratio": "IMGCLF_MAX_ASPECT_RATIO",
    "max_resized_pixels": "IMGCLF_MAX_RESIZED_PIXELS",
    "max_npy_bytes": "IMGCLF_MAX_NPY_BYTES",
    "max_npy_ndim": "IMGCLF_MAX_NPY_NDIM",
    "npy_dtypes": "IMGCLF_NPY_DTYPES",
    "max_json_bytes": "IMGCLF_MAX_JSON_BYTES",
    "max_json_depth": "IMGCLF_MAX_JSON_DEPTH",
    "image_formats": "IMGCLF_IMAGE_FORMATS",
}


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold. Every refusal names the field's `IMGCLF_*` variable (`ENV`)."""

    max_images: int = 256  # images (or tensors) per request, counted before any is decoded
    max_image_pixels: int = 40_000_000  # one image, from its header: any real photo (a 20k x 20k bomb is 400 MP)
    max_request_pixels: int = 64_000_000  # every image of the request summed: 3 B x 64 MP = 192 MB held
    max_aspect_ratio: float = 50.0  # long side / short side; the resize step scales the short side up to ~256
    max_resized_pixels: int = 16_000_000  # one image after the resize step (short side -> resize_short_side)
    max_npy_bytes: int = 128 << 20  # array data of an .npy body (its shape x itemsize, from the header)
    max_npy_ndim: int = 4
    npy_dtypes: tuple[str, ...] = DEFAULT_DTYPES
    max_json_bytes: int = 8 << 20  # a JSON / JSON lines body (SageMaker's real-time limit is 6 MB)
    max_json_depth: int = 16  # nesting of [ and {; our documents are 3 deep, json's recursion dies near 1000
    image_formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow format names Image.open may use
    resize_short_side: int | None = None  # the model's resize step (meta.resize_size); set by the handler

    def __post_init__(self) -> None:
        for name in ("max_images", "max_image_pixels", "max_request_pixels", "max_resized_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV[name]}={getattr(self, name)} must be >= 1")
        for name in ("max_npy_bytes", "max_npy_ndim", "max_json_bytes", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV[name]}={getattr(self, name)} must be >= 1")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"{ENV['max_aspect_ratio']}={self.max_aspect_ratio} must be >= 1")
        if not self.image_formats:
            raise ValueError(f"{ENV['image_formats']} must name at least one Pillow format")

    def budget_bytes(self) -> int:
        """The worst-case worker memory of one request under these limits (the table of the module docstring)."""
        images = (
            HELD_BYTES_PER_PIXEL * self.max_request_pixels
            + TRANSIENT_BYTES_PER_PIXEL * self.max_image_pixels
            + RESIZE_BYTES_PER_PIXEL * self.max_resized_pixels
            + 4 * self.max_json_bytes
        )
        npy = 2 * self.max_npy_bytes + RESIZE_BYTES_PER_PIXEL * self.max_resized_pixels
        json_objects = 25 * self.max_json_bytes
        return max(images, npy, json_objects)

    def resized_pixels(self, width: int, height: int) -> int | None:
        """Pixels of a width x height image after the resize step (None when the handler did not say)."""
        if self.resize_short_side is None:
            return None
        short, long = sorted((width, height))
        r = self.resize_short_side
        return r * -(-long * r // max(1, short))  # ceil(long * r / short) x r, in integers


DEFAULT = RequestLimits()
assert DEFAULT.budget_bytes() <= REQUEST_BUDGET_BYTES, DEFAULT.budget_bytes()
