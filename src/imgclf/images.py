"""The image rules training and serving share: the one RGB conversion and the eval/train transforms.

Training reads files with `open_rgb`; serving decodes request bodies and calls `to_rgb`; both then apply
`eval_transform(meta)`, built from the artifact's metadata, so a served image is prepared exactly as a validation
image was (tests/unit/test_images.py feeds every Pillow mode through both paths).

The RGB rule, stated:
  16-bit (I;16, I;16L, I;16B, I;16N) and 32-bit integer (I)   scaled to 8 bit (v / 256), clipped to 0..255, grey
  float (F)                                                   taken as 0..255 values, clipped (NaN -> 0), grey
  La (premultiplied grey + alpha)                             un-premultiplied to LA first
  everything else (1, L, P, PA, LA, RGBA, RGBa, CMYK, YCbCr, LAB, HSV, ...)   Pillow's conversion to RGB
Alpha is dropped (the colour under it is kept), for palette transparency as for LA/RGBA.
"""

from __future__ import annotations

import warnings
from typing import IO, TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # torchvision only for the transforms: serving's decoders use `to_rgb` without torch
    from torchvision import transforms as T

    from imgclf.artifact import ModelMeta


def to_rgb(img: Image.Image) -> Image.Image:
    """A decoded image of any Pillow mode as 8-bit RGB (the rule in the module docstring)."""
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    if img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    elif img.mode == "F":
        img = img.convert("L")
    elif img.mode == "La":
        img = img.convert("LA")
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted to RGBA": alpha is dropped
        # on purpose (see the rule), so the warning says nothing new.
        warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
        return img.convert("RGB")


def open_rgb(path: str | IO[bytes]) -> Image.Image:
    """Decode a file fully (catches truncation) and apply `to_rgb`."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def _interpolation(meta: ModelMeta) -> T.InterpolationMode:
    from torchvision import transforms as T

    return T.InterpolationMode(getattr(meta, "interpolation", "bilinear"))


def eval_transform(meta: ModelMeta) -> T.Compose:
    """Resize the short side, center-crop, normalise: validation and test (serving: serving/preprocess.py, equal)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(meta.resize_size, interpolation=_interpolation(meta)),
            T.CenterCrop(meta.image_size),
            T.ToTensor(),
            T.Normalize(meta.mean, meta.std),
        ]
    )


def train_transform(meta: ModelMeta, augment: bool) -> T.Compose:
    """The eval transform, or with `augment` a random crop and horizontal flip in place of the center crop."""
    from torchvision import transforms as T

    if not augment:
        return eval_transform(meta)
    return T.Compose(
        [
            T.Resize(meta.resize_size, interpolation=_interpolation(meta)),
            T.RandomCrop(meta.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(meta.mean, meta.std),
        ]
    )
