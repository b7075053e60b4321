"""Grad-CAM explanations: where in the image the network looked for a class.

    cam = GradCam(model, arch, input_shape=(3, 224, 224))   # finds the target layer once (one probe forward)
    cam.explain(batch, [class_index, ...], mean, std)       # -> one Explanation per image

The attribution is captum's `LayerGradCam` (PyTorch's own interpretability library; upsampling with
`LayerAttribution.interpolate`): gradients of the class score with respect to a feature map, averaged over space
into one weight per channel, weighted sum of the channels, ReLU.

The target layer is found from the architecture, not named per family: a probe forward records every module's
output in completion order, and the target is the last module whose output is a spatial feature map (4-D, more
than 1x1) after which only global pooling (4-D 1x1) and flat (2-D) outputs follow. That is `layer4` for ResNets,
`features` for EfficientNet / MobileNet / ConvNeXt / DenseNet / VGG / AlexNet, `permute` for Swin, `blocks` for
MaxViT. Adaptive pooling to a fixed grid (VGG's and AlexNet's `avgpool`, 7x7 / 6x6 whatever the input) is never the
target: it only resamples the last stage (at 64 px it blows VGG's 2x2 up to a 7x7 of copies). At inputs
so small that the last stage is already 1x1 (ResNet at 32 px) it is the stage before, the last one with a map.
Token models (ViT) have no such map: their probe sees 3-D token outputs after the last map, and they get a
UserError that names the architecture (an HTTP 400 from the server).

Cost: one forward and one backward pass per explained image batch, with gradients on; plain predictions never
reach this module.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from imgclf.errors import UserError

MAX_EXPLAINED_IMAGES = 4  # per request (checked by serving/explanations.py): each costs a forward + backward pass
OVERLAY_MIN_SIDE = 224  # small model inputs (32 px) are upscaled so the overlay is visible
OVERLAY_ALPHA = 0.45  # heat map weight in the blend


@dataclass(frozen=True)
class Explanation:
    """One image's Grad-CAM for one class."""

    class_index: int
    heatmap: list[list[float]]  # the raw low-resolution map (the target layer's H x W), normalised to 0..1
    overlay_png: bytes  # the heat map, upsampled and blended onto the image the network saw, as PNG

    def overlay_base64(self) -> str:
        return base64.b64encode(self.overlay_png).decode("ascii")


def find_target_layer(model: nn.Module, arch: str, input_shape: tuple[int, int, int]) -> str:
    """Dotted name of the module Grad-CAM attributes to (see the module docstring); UserError when none."""
    events: list[tuple[str, tuple[int, ...]]] = []
    resamplers = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

    def record(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and not isinstance(module, resamplers):
                events.append((name, tuple(output.shape)))

        return hook

    handles = [m.register_forward_hook(record(n, m)) for n, m in model.named_modules() if n]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    target = None
    for name, shape in events:
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            target = name
        elif target is not None and len(shape) not in (2, 4):
            target = None  # token sequences after the last map: the map is a patch embedding, not a stage
    if target is None:
        raise UserError(
            f"Grad-CAM needs a convolutional feature map before global pooling; {arch} has none at "
            f"{input_shape[1]} px (a token model such as ViT, or an input too small for any map). "
            "Ask without explain=gradcam."
        )
    return target


class GradCam:
    """Grad-CAM for one model; the target layer is found once, at construction."""

    def __init__(self, model: nn.Module, arch: str, input_shape: tuple[int, int, int]) -> None:
        try:
            from captum.attr import LayerGradCam
        except ImportError:
            raise RuntimeError("Grad-CAM needs captum (pip install captum==0.9.0) beside imgclf.") from None
        self.model = model
        self.arch = arch
        self.layer_name = find_target_layer(model, arch, input_shape)
        self._cam = LayerGradCam(model, model.get_submodule(self.layer_name))

    def maps(self, inputs: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """(N, h, w) Grad-CAM maps, each normalised to 0..1 (an all-zero map stays zero)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                attr = self._cam.attribute(inputs, target=targets, relu_attributions=True)
        finally:
            self.model.train(was_training)
        attr = attr.detach().float().sum(dim=1)  # (N, h, w); LayerGradCam returns one channel
        peak = attr.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return (attr / peak).clamp(0, 1).cpu()

    def explain(
        self,
        inputs: torch.Tensor,
        targets: list[int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> list[Explanation]:
        """One Explanation per row of `inputs` (preprocessed, normalised with mean/std) for its target class."""
        if inputs.shape[0] != len(targets):
            raise ValueError(f"{inputs.shape[0]} images but {len(targets)} targets")
        device = next(self.model.parameters()).device
        maps = self.maps(inputs.to(device), targets)
        views = _unnormalise(inputs.detach().float().cpu(), mean, std)
        return [
            Explanation(
                class_index=int(target),
                heatmap=[[round(float(v), 4) for v in row] for row in heat],
                overlay_png=overlay_png(view, heat),
            )
            for view, heat, target in zip(views, maps, targets, strict=True)
        ]


def _unnormalise(inputs: torch.Tensor, mean, std) -> torch.Tensor:
    """The image the network saw (after resize and crop), back in 0..1 RGB: (N, 3, H, W)."""
    m = torch.tensor(mean, dtype=inputs.dtype)[None, :, None, None]
    s = torch.tensor(std, dtype=inputs.dtype)[None, :, None, None]
    return (inputs * s + m).clamp(0, 1)


def colormap(values: np.ndarray) -> np.ndarray:
    """0..1 -> (…, 3) float RGB, the familiar blue-cyan-yellow-red ramp (no matplotlib in the serving image)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peaks
    return np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)


def overlay_png(view: torch.Tensor, heat: torch.Tensor) -> bytes:
    """PNG of `heat` (h, w in 0..1) upsampled to the image and blended onto `view` (3, H, W in 0..1)."""
    from captum.attr import LayerAttribution

    _, height, width = view.shape
    scale = max(1, -(-OVERLAY_MIN_SIDE // min(height, width)))
    size = (height * scale, width * scale)
    image = torch.nn.functional.interpolate(view[None], size=size, mode="nearest")[0]
    up = LayerAttribution.interpolate(heat[None, None], size, interpolate_mode="bilinear")[0, 0]
    rgb = image.permute(1, 2, 0).numpy()
    blended = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colormap(up.clamp(0, 1).numpy())
    buf = io.BytesIO()
    Image.fromarray((blended * 255).round().astype(np.uint8), mode="RGB").save(buf, "PNG", optimize=True)
    return buf.getvalue()
