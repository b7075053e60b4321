"""Explanations on request: what asks for one, what is refused, and the JSON fields an answer gains.

A request asks for Grad-CAM in SageMaker's CustomAttributes header or as an Accept parameter (the only way batch
transform can pass it: a transform job sets Accept, not CustomAttributes); Accept parameters win:

    X-Amzn-SageMaker-Custom-Attributes: explain=gradcam             the top-1 class of every image
    X-Amzn-SageMaker-Custom-Attributes: explain=gradcam;class=cat   ... and the class named (label, or index)
    Accept: application/json; explain=gradcam; class=cat

The JSON answer (application/json, top-k output only) gains one list per image, beside `predictions`:

    {"predictions": [[...top-k...], ...],
     "explanations": [[{"method": "gradcam", "label": "3", "index": 3, "layer": "layer4",
                        "heatmap": [[0.0, 0.41], [1.0, 0.12]],      the raw low-resolution map, 0..1
                        "overlay_png": "iVBORw0KGgo..."},           base64 PNG: the map on the image the model saw
                       {... the named class, when it is not the top-1 ...}], ...]}

Refused with 400 before any work: an unknown method, `class` without `explain`, a class the model does not have,
another Accept type or `output=probabilities` (nowhere to put the fields), more than MAX_EXPLAINED_IMAGES images,
an architecture without a convolutional feature map (ViT), and any explanation asked of a server without PyTorch
(the torch-free CPU image: Grad-CAM needs the network's gradients, which an ONNX graph does not give). Plain
requests never build the explainer, and this module imports torch only when one is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.serving import encoders, errors
from imgclf.serving.engines import EAGER, runtime_installed

if TYPE_CHECKING:
    import torch

    from imgclf.explain import GradCam

METHODS = ("gradcam",)
NO_TORCH = (
    "explain={method} needs PyTorch (Grad-CAM uses the network's gradients), and this endpoint runs the torch-free "
    "CPU serving image (imgclf-serve:cpu-*, ONNX Runtime). Explanations are served by the imgclf-serve image with "
    "torch (the CUDA flavour, which runs on CPU instances too); ask this endpoint without explain."
)


@dataclass(frozen=True)
class ExplainRequest:
    method: str
    class_index: int | None  # the class the request named, besides the top-1


def _params(text: str | None) -> dict[str, str]:
    out = {}
    for part in (text or "").replace(";", ",").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def resolve_class(name: str, index_to_name: dict[int, str]) -> int:
    """A class by its label (exact), or by its index; 400 naming a few of the model's classes otherwise."""
    for index, label in index_to_name.items():
        if label == name:
            return index
    if name.isdigit() and int(name) in index_to_name:
        return int(name)
    shown = ", ".join(list(index_to_name.values())[:10]) + (", ..." if len(index_to_name) > 10 else "")
    raise errors.bad_request(f"class={name!r} is not one of this model's {len(index_to_name)} classes ({shown}).")


def requested(
    accept: str | None,
    custom_attributes: str | None,
    fmt: encoders.ResponseFormat,
    n_images: int,
    index_to_name: dict[int, str],
) -> ExplainRequest | None:
    """The explanation a request asks for, None when it asks for none; a 400 ClientError when it cannot have it."""
    params = {**_params(custom_attributes), **_params(accept)}
    method = params.get("explain", "").lower()
    if not method:
        if "class" in params:
            raise errors.bad_request("class=NAME chooses the class to explain: send it with explain=gradcam.")
        return None
    if method not in METHODS:
        raise errors.bad_request(f"explain={method!r}: supported methods: {', '.join(METHODS)}.")
    if not runtime_installed(EAGER):
        raise errors.bad_request(NO_TORCH.format(method=method))
    from imgclf.explain import MAX_EXPLAINED_IMAGES

    if fmt.content_type != encoders.JSON or fmt.output != "top_k":
        raise errors.bad_request(
            f"explain={method} answers application/json with top-k predictions; this request asked for "
            f"{fmt.content_type} with output={fmt.output}."
        )
    if n_images > MAX_EXPLAINED_IMAGES:
        raise errors.bad_request(
            f"explain={method} is limited to {MAX_EXPLAINED_IMAGES} images per request (each costs a forward "
            f"and a backward pass); this request has {n_images}. Send fewer images, or ask without explain."
        )
    name = params.get("class")
    return ExplainRequest(method, resolve_class(name, index_to_name) if name else None)


class Explainer:
    """Grad-CAM for a loaded model, built on the first explained request (plain serving never pays for it).

    `model` is the eager torch model, or None with `load_model` giving it on first use (a server running an ONNX
    engine loads model.pt only when an explanation is asked for)."""

    def __init__(
        self,
        model: torch.nn.Module | None,
        arch: str,
        input_shape: tuple[int, int, int],
        mean,
        std,
        load_model: Callable[[], Any] | None = None,
    ) -> None:
        self.model, self.arch, self.input_shape, self.mean, self.std = model, arch, input_shape, mean, std
        self.load_model = load_model
        self._cam: GradCam | None = None

    @property
    def cam(self) -> GradCam:
        if self._cam is None:
            from imgclf.explain import GradCam

            if self.model is None and self.load_model is not None:
                self.model = self.load_model()
            self._cam = GradCam(self.model, self.arch, self.input_shape)  # UserError (400) for ViT & co
        return self._cam

    def prepare(self) -> None:
        """Build Grad-CAM now (the handler calls this while checking an explained request): a model without a
        feature map answers its 400 before the forward pass, not from the encoder."""
        _ = self.cam

    def explain(
        self,
        inputs: torch.Tensor | np.ndarray,
        probs: np.ndarray,
        request: ExplainRequest,
        index_to_name: dict[int, str],
    ) -> list[list[dict]]:
        """Per image: the top-1 class's explanation, then the named class's when it differs."""
        import torch

        inputs = torch.as_tensor(inputs)
        rows, targets = [], []
        for i, top1 in enumerate(np.asarray(probs).argmax(axis=1).tolist()):
            for target in dict.fromkeys([top1, request.class_index]):
                if target is not None:
                    rows.append(i)
                    targets.append(int(target))
        found = self.cam.explain(inputs[rows], targets, self.mean, self.std)
        out: list[list[dict]] = [[] for _ in range(len(probs))]
        for i, exp in zip(rows, found, strict=True):
            out[i].append(
                {
                    "method": request.method,
                    "label": index_to_name.get(exp.class_index, str(exp.class_index)),
                    "index": exp.class_index,
                    "layer": self.cam.layer_name,
                    "heatmap": exp.heatmap,
                    "overlay_png": exp.overlay_base64(),
                }
            )
        return out

    def add_to(
        self,
        body: bytes,
        inputs: torch.Tensor | np.ndarray,
        probs: np.ndarray,
        request: ExplainRequest,
        index_to_name: dict[int, str],
    ) -> bytes:
        """The JSON body `encoders.encode` made, with `explanations` beside `predictions`."""
        answer = json.loads(body)
        answer["explanations"] = self.explain(inputs, probs, request, index_to_name)
        return json.dumps(answer).encode()
