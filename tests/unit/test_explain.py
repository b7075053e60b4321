"""Grad-CAM finds its layer from the architecture and lights up the object: a digit pasted into one corner of a
blank 64 px canvas (tests/support/corner_digits.py, which also says what the first version of this test taught)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from support import corner_digits as cd

from imgclf import explain
from imgclf.errors import UserError
from imgclf.model import build_model

pytestmark = pytest.mark.unit

MEAN, STD = cd.MEAN, cd.STD


@pytest.mark.parametrize(("arch", "layer"), [("resnet18", "layer4"), ("regnet_y_400mf", "trunk_output")])
def test_hottest_cell_lies_on_the_digit_in_every_corner(arch, layer):
    steps, lr = cd.RECIPES[arch]
    model = cd.trained(arch, steps, lr)
    cam = explain.GradCam(model, arch, (3, cd.CANVAS, cd.CANVAS))
    assert cam.layer_name == layer
    heatmaps = []
    for digit, offset in cd.probes():
        x = cd.in_each_corner(digit, offset)
        with torch.no_grad():
            top1 = model(x).argmax(dim=1).tolist()  # what the server explains: the top-1 class
        for exp in cam.explain(x, top1, MEAN, STD):
            heat = np.asarray(exp.heatmap)
            assert heat.shape == (2, 2) and heat.min() >= 0 and heat.max() <= 1
            heatmaps.append(heat)
    hits, missed = cd.corner_hits(heatmaps, list(cd.CORNERS.values()) * 4)
    assert hits >= cd.MIN_HITS, f"the hottest cell missed the digit {cd.PROBES - hits} times: {missed}"


def test_the_overlay_is_a_png_of_the_upscaled_input_and_the_raw_map_is_normalised():
    model = build_model("resnet18", 3).eval()
    cam = explain.GradCam(model, "resnet18", (3, 64, 64))
    (exp,) = cam.explain(torch.randn(1, 3, 64, 64), [2], MEAN, STD)
    image = Image.open(io.BytesIO(exp.overlay_png))
    assert image.format == "PNG" and image.size == (256, 256) and image.mode == "RGB"
    heat = np.asarray(exp.heatmap)
    assert heat.shape == (2, 2) and heat.max() in (0.0, 1.0) and heat.min() >= 0
    assert exp.class_index == 2 and exp.overlay_base64().startswith("iVBOR")


@pytest.mark.parametrize(
    ("arch", "size", "layer"),
    [
        ("resnet18", 32, "layer3"),
        ("efficientnet_b0", 64, "features"),
        ("convnext_tiny", 64, "features"),
        ("alexnet", 224, "features"),
        ("googlenet", 64, "inception5b"),
    ],
)
def test_target_layer_is_found_from_the_architecture(arch, size, layer):
    """At 32 px ResNet's last stage is 1x1: the stage before it is the last one with a map. AlexNet's adaptive
    `avgpool` (a fixed 6x6 grid whatever the input) only resamples `features`: not the target."""
    assert explain.find_target_layer(build_model(arch, 3).eval(), arch, (3, size, size)) == layer


def test_a_token_model_has_no_map_and_says_so():
    model = build_model("vit_b_16", 3, model_kwargs={"image_size": 32}).eval()
    with pytest.raises(UserError, match="vit_b_16.*explain=gradcam"):
        explain.GradCam(model, "vit_b_16", (3, 32, 32))
