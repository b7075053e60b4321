"""Architectures, pretrained weights, and the model artifact (one format, one loader).

The artifact is self-describing so serving needs nothing else:

    model_dir/
      model.pt             state_dict of the whole classifier (CPU tensors)
      index_to_name.json   {"0": "class name", ...}  (TorchServe convention)
      imgclf.json          arch, num_classes, image_size, resize_size, mean, std, interpolation, the
                           builder's keyword arguments, the pretrained weights' name, format version

Any torchvision classification model works (`torchvision.models.list_models(module=torchvision.models)`): the head
is the last Linear layer (squeezenet: its last 1x1 Conv2d), replaced for the number of classes. With pretrained
ImageNet weights the artifact records the weights' own preprocessing (resize ratio, mean/std, interpolation) so
validation and serving prepare images exactly as the weights expect.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from imgclf import __version__
from imgclf.errors import UserError
from imgclf.hyperparameters import describe_choices

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
INDEX_FILE = "index_to_name.json"
META_FILE = "imgclf.json"
ARTIFACT_FORMAT = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class ModelMeta:
    """How the network was built and how its inputs must be prepared (training eval == serving)."""

    arch: str
    num_classes: int
    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    format: int = ARTIFACT_FORMAT
    imgclf_version: str = __version__
    # Added with any-torchvision-architecture support; defaults keep older imgclf.json files loading unchanged.
    interpolation: str = "bilinear"  # torchvision InterpolationMode value used by Resize
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # extra builder arguments (e.g. aux_logits=False)
    weights: str = ""  # the torchvision weights whose preprocessing was adopted, e.g. ResNet50_Weights.IMAGENET1K_V2

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image: what the network takes (and a tensor request must have)."""
        return (3, self.image_size, self.image_size)

    @classmethod
    def for_training(cls, arch: str, num_classes: int, image_size: int, pretrained_weights: str = "none") -> ModelMeta:
        """ImageNet convention (resize the short side to 256/224 of the crop, center-crop); with pretrained weights
        (torchvision's, or a local file of them) the weights' own resize ratio, mean/std and interpolation."""
        kwargs = tuple(sorted(arch_kwargs(arch, image_size, pretrained_weights).items()))
        if pretrained_weights.strip().lower() in ("", "none"):
            return cls(arch, num_classes, image_size, round(image_size * 256 / 224), model_kwargs=kwargs)
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        recipe = weights.transforms()
        crop, resize = recipe.crop_size[0], recipe.resize_size[0]
        if crop != image_size:
            log.warning(
                "%s's pretrained weights were trained at %d px; image-size is %d (set image-size %d to match)",
                arch,
                crop,
                image_size,
                crop,
            )
        return cls(
            arch,
            num_classes,
            image_size,
            round(image_size * resize / crop),
            mean=tuple(recipe.mean),
            std=tuple(recipe.std),
            interpolation=recipe.interpolation.value,
            model_kwargs=kwargs,
            weights=str(weights),
        )


@dataclass
class Artifact:
    model: nn.Module
    meta: ModelMeta
    index_to_name: dict[int, str]


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
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False)
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


@contextlib.contextmanager
def writing_to(model_dir: str | Path) -> Iterator[Path]:
    """Writes into the model dir; a full disk or a read-only mount becomes a UserError that says which and why.

    torch.save reports a full disk as "basic_ios::clear: iostream error" (RuntimeError): the free space is
    checked to name the real cause. Temp files are removed so no half-written model is packaged.
    """
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        yield model_dir
    except (OSError, RuntimeError) as exc:
        for tmp in model_dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        try:
            free = shutil.disk_usage(model_dir).free
        except OSError:
            free = -1
        full = getattr(exc, "errno", None) == errno.ENOSPC or 0 <= free < 64 * 1024 * 1024
        reason = f"No space left on device ({free // 1024} KiB free)" if full else str(exc)
        raise UserError(f"Could not write the model to {model_dir}: {reason}.") from exc


def save_artifact(model: nn.Module, meta: ModelMeta, class_names: list[str], model_dir: str | Path) -> None:
    """Write the three files; the weights go last through a temp file so a full disk never leaves half a model."""
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    with writing_to(model_dir) as out:
        (out / INDEX_FILE).write_text(json.dumps({str(i): n for i, n in enumerate(class_names)}, indent=1))
        (out / META_FILE).write_text(json.dumps(asdict(meta), indent=1))
        tmp = out / (WEIGHTS_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, out / WEIGHTS_FILE)


def load_meta(model_dir: str | Path) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: {model_dir} is not an imgclf model directory.") from None
    if raw.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{path} has artifact format {raw.get('format')}; this imgclf reads {ARTIFACT_FORMAT}.")
    raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
    raw["model_kwargs"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in raw.get("model_kwargs", ()))
    return ModelMeta(**raw)


def load_artifact(model_dir: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """The one loader: the model in eval mode on `device`, its preprocessing settings and class names."""
    model_dir = Path(model_dir)
    meta = load_meta(model_dir)
    index = json.loads((model_dir / INDEX_FILE).read_text())
    index_to_name = {int(k): v for k, v in index.items()}
    model = build_model(meta.arch, meta.num_classes, "none", model_kwargs=dict(meta.model_kwargs))
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return Artifact(model=model, meta=meta, index_to_name=index_to_name)
