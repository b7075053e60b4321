"""The one RGB rule and the eval transform: training (file -> `open_rgb` -> dataset) and serving (request body ->
`decoders.decode` -> the handler's transform) must give the same tensor for an image of any Pillow mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf import images
from imgclf.artifact import ModelMeta
from imgclf.serving import decoders
from imgclf.serving.limits import RequestLimits
from imgclf.training.loaders import ImageDataset

pytestmark = pytest.mark.unit

SIZE = (37, 29)
META = ModelMeta.for_training("resnet18", 10, 32)
LIMITS = RequestLimits(max_image_pixels=10_000_000)

# Every mode a file can hold, with the format that holds it (read back in that mode, or the one named).
FILE_MODES = {
    "1": ("PNG", "1"),
    "L": ("PNG", "L"),
    "P": ("PNG", "P"),
    "PA": ("TIFF", "PA"),
    "RGB": ("PNG", "RGB"),
    "RGBA": ("PNG", "RGBA"),
    "CMYK": ("TIFF", "CMYK"),
    "YCbCr": ("TIFF", "YCbCr"),
    "LAB": ("TIFF", "LAB"),
    "LA": ("PNG", "LA"),
    "I": ("TIFF", "I"),
    "I;16": ("PNG", "I;16"),
    "I;16B": ("TIFF", "I;16B"),
    "I;16L": ("TIFF", "I;16"),  # little-endian 16-bit: Pillow names it I;16 when read back
    "F": ("TIFF", "F"),
}
# Modes no file format holds: the rule must treat them as their file-holdable twin.
MEMORY_MODES = {
    "HSV": lambda img: img.convert("RGB"),
    "I;16N": lambda img: Image.frombytes("I;16", img.size, np.asarray(img).astype("<u2").tobytes()),
    "La": lambda img: img.convert("LA"),
    "RGBa": lambda img: img.convert("RGBA"),
}


def _image(mode: str, seed: int = 0) -> Image.Image:
    """Random pixels in `mode`, using its whole value range (16-bit, 32-bit and float ones beyond 0..255)."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    if mode.startswith("I;16"):
        values = rng.integers(0, 65536, (h, w)).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, SIZE, values.tobytes())
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, (h, w)).astype(np.int32))
    if mode == "F":
        values = rng.uniform(-20, 300, (h, w)).astype(np.float32)
        values[0, :3] = [np.nan, 0.5, 254.9]
        return Image.fromarray(values)
    nbytes = len(Image.new(mode, SIZE).tobytes())
    img = Image.frombytes(mode, SIZE, rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    if mode in ("P", "PA"):
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return img


def _training_tensor(path) -> torch.Tensor:
    tensor, label = ImageDataset([(str(path), 0)], images.eval_transform(META))[0]
    return tensor


def _serving_tensor(body: bytes) -> torch.Tensor:
    (img,) = decoders.decode(body, "application/octet-stream", LIMITS)
    return images.eval_transform(META)(img)  # what the handler's transform is (ImageClassifierHandler.initialize)


@pytest.mark.parametrize("mode", sorted(FILE_MODES))
def test_every_file_mode_gives_the_same_tensor_in_training_and_serving(tmp_path, mode):
    fmt, read_back = FILE_MODES[mode]
    path = tmp_path / f"img.{fmt.lower()}"
    _image(mode).save(path, fmt)
    with Image.open(path) as saved:
        assert saved.mode == read_back
    trained, served = _training_tensor(path), _serving_tensor(path.read_bytes())
    assert trained.shape == (3, 32, 32)
    assert torch.equal(trained, served)


def test_palette_transparency_is_dropped_alike_in_training_and_serving(tmp_path):
    img = _image("P")
    img.info["transparency"] = bytes(range(0, 256))  # per-index alpha (a tRNS chunk)
    path = tmp_path / "t.png"
    img.save(path, transparency=bytes(range(0, 256)))
    with Image.open(path) as saved:
        assert saved.mode == "P" and "transparency" in saved.info
        expected = np.asarray(saved.convert("RGBA"))[..., :3]
    assert np.array_equal(np.asarray(images.open_rgb(path)), expected)
    assert torch.equal(_training_tensor(path), _serving_tensor(path.read_bytes()))


@pytest.mark.parametrize("mode", sorted(MEMORY_MODES))
def test_modes_no_file_holds_follow_the_rule_of_their_twin(mode):
    img = _image(mode)
    rgb = images.to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == SIZE
    assert np.array_equal(np.asarray(rgb), np.asarray(images.to_rgb(MEMORY_MODES[mode](img))))


def test_sixteen_bit_is_scaled_to_eight_bit_whatever_its_byte_order():
    values = np.array([[0, 255, 256, 32768, 65535]], dtype=np.uint16)
    expected = [0, 0, 1, 128, 255]
    for mode, dtype in (("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")):
        img = Image.frombytes(mode, (5, 1), values.astype(dtype).tobytes())
        assert list(np.asarray(images.to_rgb(img))[0, :, 0]) == expected, mode


def test_float_is_read_as_0_255_clipped():
    img = Image.fromarray(np.array([[-5.0, 0.5, 100.7, 254.9, 300.0, np.nan]], dtype=np.float32))
    assert list(np.asarray(images.to_rgb(img))[0, :, 0]) == [0, 0, 100, 254, 255, 0]


@pytest.mark.parametrize(
    "mode, array",
    [
        ("L", np.full((20, 30), 200, np.uint8)),
        ("I;16", np.full((20, 30), 50000, np.uint16)),
        ("CMYK", np.zeros((20, 30, 4), np.uint8)),
        ("P", np.zeros((20, 30), np.uint8)),
    ],
)
def test_any_pil_mode_becomes_a_normalised_rgb_tensor(tmp_path, mode, array):
    path = tmp_path / f"img.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.fromarray(array).convert(mode).save(path) if mode in ("CMYK", "P") else Image.fromarray(array).save(path)
    meta = ModelMeta.for_training("resnet18", 10, 32)
    tensor = images.eval_transform(meta)(images.open_rgb(str(path)))
    assert tensor.shape == (3, 32, 32)
