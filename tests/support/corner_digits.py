"""The synthetic object Grad-CAM must find: a digit pasted into one corner of a blank canvas, and a CNN trained for
seconds to classify the digit wherever it is. Used in-process (tests/unit/test_explain.py) and through a real server
and a real model artifact (tests/integration/serving/test_explanations_endpoint.py).

    model = trained("resnet18", steps=60, lr=2e-3)   # fixed seeds; the last HELD_OUT digits are never trained on
    for digit, offset in probes(): x = in_each_corner(digit, offset)   # (4, 3, S, S): one digit, four corners
    hits, missed = corner_hits(heatmaps_of_x)        # the hottest cell's quadrant vs the corner, per image

What the first version of the unit test taught (32 px canvases, black = -1 after normalisation, 40 steps): at 32 px
ResNet-18's last stage is 1x1, so the map came from layer3, whose 2x2 cells each see the whole image; a black canvas
normalised to -1 differs from the convolutions' zero padding, so the canvas border is a feature in every corner; and
the nets were barely trained (MobileNetV3's BatchNorm statistics, momentum 0.01, still mostly their initial values).
Hence: 64 px (the last stage is 2x2, one cell per quadrant), mean 0 / std 1 (black stays 0, like the padding), and
BatchNorm statistics re-estimated after training. The map code itself (target, orientation, normalisation) was right.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model
from imgclf.sample_data import load_digits

CANVAS = 64  # the last stage of ResNet-18, MobileNet, ShuffleNet, ... is 2x2 here: one cell per quadrant
DIGIT = 24  # the 8x8 digit, upscaled 3x, placed anywhere inside one 32x32 quadrant
DIGITS = (0, 1, 2, 3)  # four classes: learnt in a few dozen small batches
CORNERS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0), "bottom-right": (1, 1)}
MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # black stays 0: the canvas looks like the zero padding
HELD_OUT = 12  # the last 12 of the digits are never trained on; the probes are 4 of them
PROBES = 16  # 4 held-out digits x 4 corners
# A map that ignores the input, or lights a fixed corner, hits 4 of 16; a random one reaches 11 with p = 0.0003.
# ResNet-18 (60 steps) hit 16, 12 and 13 of 16 for training seeds 0, 1, 2 (other probe offsets): 11 leaves room for
# another CPU's arithmetic without letting a broken map through.
MIN_HITS = 11
# (steps, lr) that train each architecture enough for its map to find the digit. No other family does it in a
# training budget this small (hits of 16 over seeds, 64 px unless said): shufflenet_v2_x1_0 200 steps 13, 11, 7
# (128 px, 4x4 map: 5, 5, 10); shufflenet_v2_x0_5 150 steps 3-10; regnet_x_400mf 100 steps 6, 7, 5; googlenet
# 80 steps 11, 8, 4; mobilenet_v3_small 100 steps 4. Their misses light one fixed cell whatever the digit's place.
# Those were undertrained, not mis-explained: their probe accuracy was at chance. regnet_y_400mf (cheap: ~20 s
# alone on 2 cores) needs 200 steps at lr 1e-3 and then hits 16, 15, 16 (seeds 0, 1, 2); at 60 steps / 2e-3 its
# loss stays near ln 4 and it hits 12, 2, 4; 150 steps 10, 11, 12. mobilenet_v2, efficientnet_b0, mnasnet0_5 at 60
# steps / 2e-3: 3, 4, 5 (seed 0, chance accuracy).
RECIPES = {"resnet18": (60, 2e-3), "regnet_y_400mf": (200, 1e-3)}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits of DIGITS, upscaled to DIGIT px, 0..1, with their class indices (0..3)."""
    images, labels = load_digits()
    keep = np.isin(labels, DIGITS)
    big = [Image.fromarray(d).resize((DIGIT, DIGIT), Image.BILINEAR) for d in images[keep]]
    return np.stack([np.asarray(b, dtype=np.float32) / 255 for b in big]), np.searchsorted(DIGITS, labels[keep])


def _canvas(digit: np.ndarray, corner: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
    """(3, 64, 64): a black canvas with the digit in the corner's quadrant, `offset` px into it."""
    img = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    top, left = corner[0] * CANVAS // 2 + offset[0], corner[1] * CANVAS // 2 + offset[1]
    img[top : top + DIGIT, left : left + DIGIT] = digit
    return torch.from_numpy(img)[None].repeat(3, 1, 1)


def _offset(rng: np.random.Generator) -> tuple[int, int]:
    return tuple(int(v) for v in rng.integers(0, CANVAS // 2 - DIGIT + 1, 2))


def _batch(digits: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    corners = list(CORNERS.values())
    return torch.stack([_canvas(d, corners[rng.integers(4)], _offset(rng)) for d in digits])


def trained(arch: str, steps: int, lr: float, seed: int = 0) -> torch.nn.Module:
    """`arch` from random init, `steps` Adam steps on batches of 16 training digits in random places; then its
    BatchNorm statistics re-estimated on a few more batches (MobileNetV3's momentum of 0.01 would otherwise leave them
    mostly at their initial values after so few steps, and the evaluated net would not be the trained one)."""
    digits, classes = _digits()
    digits, classes = digits[:-HELD_OUT], classes[:-HELD_OUT]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, len(DIGITS))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(digits), 16)
        loss = torch.nn.functional.cross_entropy(model(_batch(digits[idx], rng)), torch.as_tensor(classes[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for _ in range(4):
            model(_batch(digits[rng.integers(0, len(digits), 32)], rng))
    return model.eval()


def probes(seed: int = 1) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Four held-out digits, each with one random offset into its quadrant."""
    digits, _ = _digits()
    rng = np.random.default_rng(seed)
    return [(digit, _offset(rng)) for digit in digits[-HELD_OUT:][:4]]


def in_each_corner(digit: np.ndarray, offset: tuple[int, int]) -> torch.Tensor:
    """(4, 3, 64, 64): the digit at the same offset into each quadrant, in CORNERS order."""
    return torch.stack([_canvas(digit, corner, offset) for corner in CORNERS.values()])


def png(canvas: torch.Tensor) -> bytes:
    """A (3, 64, 64) 0..1 canvas as the 8-bit PNG a client would send."""
    buf = io.BytesIO()
    Image.fromarray((canvas[0].numpy() * 255).round().astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def save(model: torch.nn.Module, arch: str, model_dir: Path) -> Path:
    """A real model artifact whose serving preprocessing is the identity on a 64 px canvas: no resize or crop
    (resize_size = image_size = CANVAS), mean 0 / std 1 as in training."""
    meta = ModelMeta(arch, len(DIGITS), CANVAS, CANVAS, mean=MEAN, std=STD)
    save_artifact(model, meta, [str(d) for d in DIGITS], model_dir)
    return model_dir


def corner_hits(heatmaps: list, corners: list[tuple[int, int]]) -> tuple[int, list]:
    """How many maps have their hottest cell in the corner's quadrant (any even map size), and the misses."""
    hits, missed = 0, []
    for heat, corner in zip(heatmaps, corners, strict=True):
        heat = np.asarray(heat)
        row, col = np.unravel_index(heat.argmax(), heat.shape)
        if (row * 2 // heat.shape[0], col * 2 // heat.shape[1]) == corner:
            hits += 1
        else:
            missed.append((corner, heat.round(2).tolist()))
    return hits, missed


def explained_hits(invoke: Callable[[bytes], tuple[int, bytes]]) -> tuple[int, list]:
    """corner_hits over the probes asked through a server: each probe's four canvases are one explained request
    (JSON instances of base64 PNGs; `invoke(body)` POSTs it with the explain attribute and returns status, body)."""
    heatmaps = []
    for digit, offset in probes():
        instances = [base64.b64encode(png(c)).decode() for c in in_each_corner(digit, offset)]
        status, body = invoke(json.dumps({"instances": instances}).encode())
        assert status == 200, body[:2000]
        heatmaps += [explained[0]["heatmap"] for explained in json.loads(body)["explanations"]]
    return corner_hits(heatmaps, list(CORNERS.values()) * (PROBES // 4))
