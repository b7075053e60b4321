"""Image -> model input without torch: the eval transform (resize short side, center crop, normalise) in
Pillow + numpy, equal to torchvision's `eval_transform` for the same RGB image (tests/unit/serving/test_preprocess.py
checks it over sizes, aspect ratios, interpolations and modes).

Why not torchvision here: the CPU serving image has no torch, and even with torch the tensor round-trip
(PIL -> ToTensor -> Normalize) costs more than one lookup table. The arithmetic is torchvision's own, in float32
and in the same order (v / 255, then (x - mean) / std), precomputed per channel for the 256 possible byte values,
so the output matches bit for bit on the same resized pixels.

JPEG draft mode (`apply_draft`, IMGCLF_JPEG_DRAFT, off by default) is the one deliberate difference: libjpeg
decodes a much larger image at 1/2, 1/4 or 1/8 scale in the DCT domain, which is several times cheaper than a full
decode followed by a big downscale, but gives slightly different pixels. The guard: the decoded image's shorter
side stays >= DRAFT_KEEP_RATIO (2) times the resize target, so Pillow's antialiased resize still does the final
downsampling; a JPEG smaller than DRAFT_MIN_RATIO times the target (where no 1/2 scale keeps that margin) is
decoded in full. benchmarks/draft_bench.py measures the speed-up and the difference from torchvision's transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# torchvision's pil_modes_mapping: InterpolationMode value -> Pillow resampling filter
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}

# Decode a JPEG to no less than DRAFT_KEEP_RATIO x resize_size on its short side (so the final resize still
# shrinks it by >= 2x, with its antialias filter); libjpeg's smallest reduction is 1/2, so below DRAFT_MIN_RATIO x
# resize_size there is nothing to gain.
DRAFT_KEEP_RATIO = 2.0
DRAFT_MIN_RATIO = 2 * DRAFT_KEEP_RATIO
# The stated bound of draft on vs torchvision's eval transform of the full decode, in 8-bit pixel levels
# (|difference| * std * 255), for JPEGs draft applies to: benchmarks/draft_bench.py measured a worst case of
# max 26 / p99 8 / mean 0.74 (an upscaled photograph, resize 256; benchmarks/NOTES.md); the tests hold it.
DRAFT_BOUND_LEVELS = {"max": 32.0, "p99": 10.0, "mean": 1.0}


@dataclass(frozen=True)
class Preprocessing:
    """The artifact's preprocessing settings (the fields of `ModelMeta` that prepare an image)."""

    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def from_meta(cls, meta: Any) -> Preprocessing:
        """From a ModelMeta (or anything with its fields, e.g. imgclf.json read as a dict): no torch import."""
        get = meta.get if isinstance(meta, dict) else lambda k, d=None: getattr(meta, k, d)
        return cls(
            image_size=int(get("image_size")),
            resize_size=int(get("resize_size")),
            mean=tuple(float(v) for v in get("mean")),
            std=tuple(float(v) for v in get("std")),
            interpolation=str(get("interpolation", "bilinear") or "bilinear"),
        )

    @property
    def resample(self) -> Image.Resampling:
        try:
            return PIL_FILTERS[self.interpolation]
        except KeyError:
            raise ValueError(f"Unknown interpolation {self.interpolation!r}; one of {sorted(PIL_FILTERS)}") from None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the short side becomes `size`, the long side int(size * long / short)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop as a Pillow crop box (a box outside the image pads with zeros, as it does)."""
    if crop > width:
        left = -((crop - width) // 2)
    else:
        left = int(round((width - crop) / 2.0))
    if crop > height:
        top = -((crop - height) // 2)
    else:
        top = int(round((height - crop) / 2.0))
    return left, top, left + crop, top + crop


def _lookup_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: byte value -> normalised value, with ToTensor + Normalize's float32 operations."""
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return (values[None, :] - mean32) / std32


class Preprocessor:
    """RGB PIL image -> (3, S, S) float32, normalised; `batch` stacks several into NCHW."""

    def __init__(self, prep: Preprocessing, draft: bool = False) -> None:
        self.prep = prep
        self.draft = draft
        self._resample = prep.resample
        self._table = _lookup_table(prep.mean, prep.std)

    def draft_target(self, width: int, height: int) -> tuple[int, int] | None:
        """The size to ask libjpeg for, or None when the image is not large enough to gain from draft mode."""
        if not self.draft or min(width, height) < DRAFT_MIN_RATIO * self.prep.resize_size:
            return None
        # Pillow's draft picks the largest reduction whose result is >= this size in both dimensions.
        short = math.ceil(DRAFT_KEEP_RATIO * self.prep.resize_size)
        if width <= height:
            return short, math.ceil(height * short / width)
        return math.ceil(width * short / height), short

    def apply_draft(self, img: Image.Image) -> bool:
        """Call after Image.open and before load(): a large JPEG is decoded at reduced scale. True if it was."""
        if img.format != "JPEG":
            return False
        target = self.draft_target(*img.size)
        if target is None:
            return False
        return img.draft(img.mode if img.mode in ("L", "RGB") else None, target) is not None

    def pixels(self, img: Image.Image) -> np.ndarray:
        """Resize + center crop of an RGB image: (S, S, 3) uint8."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        size = resized_size(img.width, img.height, self.prep.resize_size)
        if size != img.size:
            img = img.resize(size, self._resample)
        crop = self.prep.image_size
        if img.size != (crop, crop):
            img = img.crop(center_crop_box(img.width, img.height, crop))
        return np.asarray(img, dtype=np.uint8)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32, torchvision's ToTensor + Normalize values."""
        out = np.empty((3, pixels.shape[0], pixels.shape[1]), dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], pixels[:, :, c], out=out[c])
        return out

    def __call__(self, img: Image.Image) -> np.ndarray:
        return self.normalise(self.pixels(img))

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), 3, self.prep.image_size, self.prep.image_size), dtype=np.float32)
        for i, img in enumerate(images):
            out[i] = self(img)
        return out


def open_for_model(path_or_file: Any, preprocessor: Preprocessor) -> Image.Image:
    """Open an image file with draft mode applied where it pays, decoded and converted to RGB.

    (Only for local files and benchmarks; the server decodes request bodies in serving/decoders.py, which calls
    `Preprocessor.apply_draft` between its header checks and the full decode when IMGCLF_JPEG_DRAFT is on.)"""
    with Image.open(path_or_file) as img:
        preprocessor.apply_draft(img)
        img.load()
        return img.convert("RGB")
