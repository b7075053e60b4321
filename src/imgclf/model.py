"""Architectures and pretrained weights: `build_model` and the head/backbone helpers (the artifact: artifact.py).

Any torchvision classification model works (`torchvision.models.list_models(module=torchvision.models)`): the head
is the last Linear layer (squeezenet: its last 1x1 Conv2d), replaced for the number of classes. With pretrained
ImageNet weights the artifact records the weights' own preprocessing (resize ratio, mean/std, interpolation) so
validation and serving prepare images exactly as the weights expect (`artifact.ModelMeta.for_training`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from imgclf import checksums
from imgclf.errors import UserError
from imgclf.hyperparameters import describe_choices

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60


def head_path(model: nn.Module) -> str:
    """Dotted name of the classification head: the last Linear layer (fc for ResNets, classifier.1 for
    EfficientNet, heads.head for ViT, ...); for squeezenet, which has none, its last Conv2d (classifier.1)."""
    linear = conv = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            linear = name
        elif isinstance(module, nn.Conv2d):
            conv = name
    path = linear or conv
    if path is None:
        raise ValueError(f"{type(model).__name__} has no Linear head")
    return path


def _new_head(old: nn.Module, num_classes: int) -> nn.Module:
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes)
    return nn.Conv2d(old.in_channels, num_classes, kernel_size=1)


def architectures() -> list[str]:
    """The classification models of the installed torchvision (what `arch` accepts)."""
    return torchvision.models.list_models(module=torchvision.models)


def arch_kwargs(arch: str, image_size: int, pretrained_weights: str = "none") -> dict[str, Any]:
    """Builder arguments a family needs beyond num_classes (recorded in the artifact so loading rebuilds it)."""
    pretrained = pretrained_weights.strip().lower() not in ("", "none")
    if arch in ("googlenet", "inception_v3"):
        # No auxiliary heads: training returns plain logits. torchvision's weights expect transform_input.
        return {"aux_logits": False, "transform_input": pretrained, "init_weights": not pretrained}
    if arch.startswith("vit_") and image_size != 224:
        if pretrained:
            raise UserError(f"{arch} with pretrained weights needs image-size 224 (its position embeddings).")
        return {"image_size": image_size}
    if arch == "maxvit_t" and image_size != 224:
        if pretrained:
            raise UserError("maxvit_t with pretrained weights needs image-size 224.")
        return {"input_size": (image_size, image_size)}
    return {}


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def head(model: nn.Module) -> nn.Module:
    return model.get_submodule(head_path(model))


@contextlib.contextmanager
def headless(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its head swapped for Identity: forward() returns backbone features."""
    path = head_path(model)
    original = model.get_submodule(path)
    _set_submodule(model, path, nn.Identity())
    try:
        yield model
    finally:
        _set_submodule(model, path, original)


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's own download (cached under TORCH_HOME); a clear error instead of a hang offline."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    # torch.hub checks the name's hash prefix only while downloading, and unpickles unless told weights_only: a
    # cached file (baked into the image, or left by an earlier job) is checked here before it is loaded.
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if cached.is_file():
        checksums.verify_pretrained(cached, torchvision_name=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # URLError, timeouts, HTTP errors, corrupt cache
        raise UserError(
            f"Could not get ImageNet weights for {arch} from {weights.url} "
            f"(cache: {torch.hub.get_dir()}): {exc}. The job may have no internet access (network isolation, "
            "a VPC without NAT). Set pretrained-weights to a local .pth file (bake one into the image with "
            "scripts/build_push.sh --pretrained-weights PATH|URL) or to 'none' to train from random init."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise UserError(
            f"pretrained-weights file {path!r} does not exist. Use 'imagenet', 'none' or a path to a .pth file."
        )
    checksums.verify_pretrained(Path(path))  # SHA256SUMS beside a file baked into the image
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"pretrained-weights file {path!r} is not a readable PyTorch state_dict: {exc}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise UserError(f"pretrained-weights file {path!r} holds a {type(loaded).__name__}, not a state_dict.")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def build_model(
    arch: str,
    num_classes: int,
    pretrained_weights: str = "none",
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The torchvision architecture with pretrained backbone weights (if any) and a new head.

    `model_kwargs`: builder arguments (`ModelMeta.model_kwargs`); default: `arch_kwargs` at 224 px.
    """
    known = architectures()
    if arch not in known:
        ordered = [a for a in ("resnet18", "resnet34", "resnet50") if a in known] + [
            a for a in known if a not in ("resnet18", "resnet34", "resnet50")
        ]
        raise UserError(f"Unknown arch {arch!r}. Choose one of: {describe_choices(tuple(ordered))}.")
    kwargs = dict(model_kwargs) if model_kwargs is not None else arch_kwargs(arch, 224, pretrained_weights)
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    source = pretrained_weights.strip()
    if source.lower() not in ("", "none"):
        state = _imagenet_state_dict(arch) if source.lower() == "imagenet" else _file_state_dict(source)
        own = model.state_dict()
        # The old head's shape depends on what the weights were trained for; the backbone must match exactly.
        # Auxiliary heads (googlenet, inception_v3) are not built, so their weights are not needed.
        hp = head_path(model)
        state = {
            k: v
            for k, v in state.items()
            if not k.startswith(hp + ".") and not (k.startswith(("aux1.", "aux2.", "AuxLogits.")) and k not in own)
        }
        mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        unexpected = [k for k in state if k not in own]
        missing = [k for k in own if not k.startswith(hp + ".") and k not in state]
        if mismatched or missing or unexpected:
            raise UserError(
                f"pretrained-weights {source!r} do not fit {arch}: {len(missing)} missing, "
                f"{len(unexpected)} unexpected and {len(mismatched)} mismatched tensors "
                f"(first: {(missing + unexpected + mismatched)[0]})."
            )
        model.load_state_dict(state, strict=False)
        log.info("Loaded pretrained weights for %s from %s", arch, source)
    _set_submodule(model, head_path(model), _new_head(head(model), num_classes))
    return model
