"""The torch-free preprocessing equals torchvision's eval transform (training/serving skew is the failure to fear),
and JPEG draft mode (IMGCLF_JPEG_DRAFT, off by default) is applied only where the image is large enough, never
decodes below 2x the resize size, and stays within the stated bound of the full decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgclf.artifact import ModelMeta
from imgclf.images import eval_transform, to_rgb
from imgclf.serving import decoders
from imgclf.serving.limits import RequestLimits
from imgclf.serving.preprocess import (
    DRAFT_BOUND_LEVELS,
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


def test_draft_is_off_unless_asked_for():
    assert Preprocessor(Preprocessing.from_meta(_meta(32))).draft is False


def test_draft_is_not_used_below_the_size_threshold():
    p = Preprocessor(Preprocessing.from_meta(_meta(224, resize_size=256)), draft=True)
    small = int(DRAFT_MIN_RATIO * 256) - 1
    assert p.draft_target(small, small + 100) is None
    with Image.open(io.BytesIO(_jpeg(_photo_like(small, small)))) as img:
        assert p.apply_draft(img) is False


@pytest.mark.parametrize(
    "size", [(148, 148), (149, 300), (300, 149), (295, 221), (296, 222), (600, 450), (599, 1201), (1184, 900)]
)
def test_the_guard_never_decodes_below_twice_the_resize_size(size):
    """Every reduction libjpeg is offered (1/2 .. 1/8, both orientations, sizes just around the thresholds)."""
    p = Preprocessor(Preprocessing.from_meta(_meta(32)), draft=True)  # resize 37
    with Image.open(io.BytesIO(_jpeg(_photo_like(*size)))) as img:
        drafted = p.apply_draft(img)
        img.load()
        assert min(img.size) >= DRAFT_KEEP_RATIO * 37
        assert drafted == (min(size) >= DRAFT_MIN_RATIO * 37)
        if min(size) >= 8 * DRAFT_KEEP_RATIO * 37:
            assert img.size[0] < size[0] / 4  # ...and it does reduce where it can


def test_draft_decodes_large_jpegs_smaller_but_never_below_the_kept_margin():
    p = Preprocessor(Preprocessing.from_meta(_meta(32)), draft=True)
    data = _jpeg(_photo_like(600, 450))
    with Image.open(io.BytesIO(data)) as img:
        assert p.apply_draft(img) is True
        img.load()
        assert min(img.size) >= DRAFT_KEEP_RATIO * 37 and img.size[0] < 600


def _levels(a: np.ndarray, b: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """|a - b| in 8-bit pixel levels (one level = 1/255/std in normalised units)."""
    return np.abs(a - b) * np.asarray(meta.std, dtype=np.float32)[:, None, None] * 255


@pytest.mark.parametrize("size", [(1600, 1200), (1200, 1700)])
def test_draft_on_a_large_jpeg_stays_within_the_stated_bound_of_torchvision(size):
    """ResNet settings (resize 256, crop 224), through the server's decoder: drafted to 1/2, within the bound."""
    meta = _meta(224, resize_size=256)
    data = _jpeg(_photo_like(*size, seed=3))
    drafted = Preprocessor(Preprocessing.from_meta(meta), draft=True)
    (img,) = decoders.decode(data, "image/jpeg", RequestLimits(), drafted.apply_draft)
    assert img.size == (size[0] // 2, size[1] // 2)
    full = eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
    levels = _levels(drafted(img), full, meta)
    assert levels.max() <= DRAFT_BOUND_LEVELS["max"]
    assert np.percentile(levels, 99) <= DRAFT_BOUND_LEVELS["p99"]
    assert levels.mean() <= DRAFT_BOUND_LEVELS["mean"]
    assert levels.max() > 0  # draft did change pixels: this test measures the bound, not an exact path


def test_draft_off_gives_the_exact_transform_for_large_jpegs():
    meta = _meta(224, resize_size=256)
    data = _jpeg(_photo_like(1600, 1200, seed=4))
    exact = Preprocessor(Preprocessing.from_meta(meta))
    (img,) = decoders.decode(data, "image/jpeg", RequestLimits())  # the server's decode with IMGCLF_JPEG_DRAFT off
    assert img.size == (1600, 1200)
    np.testing.assert_allclose(
        exact(img), eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy(), atol=TOLERANCE
    )
    got = exact(open_for_model(io.BytesIO(data), exact))
    np.testing.assert_allclose(
        got, eval_transform(meta)(Image.open(io.BytesIO(data)).convert("RGB")).numpy(), atol=TOLERANCE
    )
