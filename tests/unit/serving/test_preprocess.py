"""The torch-free preprocessing equals torchvision's eval transform (training/serving skew is the failure to fear),
and JPEG draft mode is applied only where the image is large enough and stays close to the full decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgclf.artifact import ModelMeta
from imgclf.images import eval_transform, to_rgb
from imgclf.serving.preprocess import (
    DRAFT_KEEP_RATIO,
    DRAFT_MIN_RATIO,
    Preprocessing,
    Preprocessor,
    center_crop_box,
    open_for_model,
    resized_size,
)

pytestmark = pytest.mark.unit

TOLERANCE = 1e-6  # normalised units; the implementation is bit-exact in practice


def _photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus texture and edges: resampling filters see what they see in photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    base += rng.normal(0, 25, base.shape)
    base[height // 3 : height // 2, width // 4 : width // 2] = (250, 20, 40)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _meta(image_size=32, resize_size=None, interpolation="bilinear", **kw) -> ModelMeta:
    resize = resize_size if resize_size is not None else round(image_size * 256 / 224)
    return ModelMeta("resnet18", 10, image_size, resize, interpolation=interpolation, **kw)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"])
@pytest.mark.parametrize(
    "size",
    [(8, 8), (37, 29), (29, 37), (64, 64), (300, 200), (201, 403), (1000, 130), (36, 36), (16, 40)],
)
def test_output_equals_torchvision_eval_transform(size, interpolation):
    meta = _meta(32, interpolation=interpolation)
    img = _photo_like(*size)
    expected = eval_transform(meta)(img).numpy()
    got = Preprocessor(Preprocessing.from_meta(meta))(img)
    assert got.dtype == np.float32 and got.shape == expected.shape == (3, 32, 32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1", "LA"])
def test_every_mode_after_the_rgb_rule_equals_torchvision(mode):
    meta = _meta(32)
    if mode == "I;16":
        img = Image.fromarray(np.arange(50 * 40, dtype=np.uint16).reshape(40, 50) * 30)
        assert img.mode.startswith("I")
    else:
        img = _photo_like(50, 40).convert(mode)
    rgb = to_rgb(img)
    expected = eval_transform(meta)(rgb).numpy()
    np.testing.assert_allclose(Preprocessor(Preprocessing.from_meta(meta))(rgb), expected, atol=TOLERANCE)


def test_imagenet_224_settings_and_pretrained_style_mean_std_match():
    meta = _meta(224, resize_size=232, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    img = _photo_like(640, 480)
    np.testing.assert_allclose(
        Preprocessor(Preprocessing.from_meta(meta))(img), eval_transform(meta)(img).numpy(), atol=TOLERANCE
    )


def test_crop_larger_than_the_resized_image_pads_like_torchvision():
    meta = _meta(40, resize_size=33)
    img = _photo_like(33, 57)
    np.testing.assert_allclose(
        Preprocessor(Preprocessing.from_meta(meta))(img), eval_transform(meta)(img).numpy(), atol=TOLERANCE
    )


def test_geometry_helpers_follow_torchvision():
    assert resized_size(300, 200, 256) == (384, 256)
    assert resized_size(200, 300, 256) == (256, 384)
    assert center_crop_box(300, 300, 224) == (38, 38, 262, 262)
    assert center_crop_box(20, 30, 24) == (-2, 3, 22, 27)


def test_from_meta_reads_a_plain_dict_as_well():
    meta = _meta(32)
    as_dict = {"image_size": 32, "resize_size": 37, "mean": list(meta.mean), "std": list(meta.std)}
    assert Preprocessing.from_meta(as_dict) == Preprocessing.from_meta(meta)


def test_batch_stacks_nchw():
    p = Preprocessor(Preprocessing.from_meta(_meta(32)))
    batch = p.batch([_photo_like(40, 50), _photo_like(70, 33)])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_draft_is_not_used_below_the_size_threshold():
    p = Preprocessor(Preprocessing.from_meta(_meta(224, resize_size=256)))
    small = int(DRAFT_MIN_RATIO * 256) - 1
    assert p.draft_target(small, small + 100) is None
    with Image.open(io.BytesIO(_jpeg(_photo_like(small, small)))) as img:
        assert p.apply_draft(img) is False


def test_draft_decodes_large_jpegs_smaller_but_never_below_the_kept_margin():
    p = Preprocessor(Preprocessing.from_meta(_meta(32)))
    data = _jpeg(_photo_like(600, 450))
    with Image.open(io.BytesIO(data)) as img:
        assert p.apply_draft(img) is True
        img.load()
        assert min(img.size) >= DRAFT_KEEP_RATIO * 37 and img.size[0] < 600


def test_draft_changes_pixels_only_slightly():
    """Draft mode is the one deliberate difference from torchvision: bounded, and measured in the benchmark."""
    meta = _meta(32)
    data = _jpeg(_photo_like(800, 600, seed=3))
    full = eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
    drafted = Preprocessor(Preprocessing.from_meta(meta))
    fast = drafted(open_for_model(io.BytesIO(data), drafted))
    # in 8-bit pixel levels (one level = 1/255/std in normalised units)
    levels = np.abs(fast - full) * np.asarray(meta.std, dtype=np.float32)[:, None, None] * 255
    assert levels.mean() < 2.0 and np.percentile(levels, 99) < 8.0


def test_draft_off_gives_the_exact_transform_for_large_jpegs():
    meta = _meta(32)
    data = _jpeg(_photo_like(800, 600, seed=4))
    exact = Preprocessor(Preprocessing.from_meta(meta), draft=False)
    got = exact(open_for_model(io.BytesIO(data), exact))
    np.testing.assert_allclose(
        got, eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy(), atol=TOLERANCE
    )
