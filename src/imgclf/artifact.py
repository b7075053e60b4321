"""The model artifact: one format, one writer, one loader. Self-describing, so serving needs nothing else:

    model_dir/
      model.pt             state_dict of the whole classifier (CPU tensors)
      index_to_name.json   {"0": "class name", ...}  (TorchServe convention)
      imgclf.json          arch, num_classes, image_size, resize_size, mean, std, interpolation, the
                           builder's keyword arguments, the pretrained weights' name, format version, and the
                           sha256 of model.pt and index_to_name.json (imgclf.checksums), verified before loading

torch is imported only by the functions that need it (writing, building and loading the network): the metadata,
class names and checksums are read without it, in the torch-free CPU serving image too.

Nothing loaded runs code: model.pt is read weights-only, the JSON files are validated (types, sizes, the class
count against the head) before use.

With pretrained ImageNet weights `ModelMeta.for_training` records the weights' own preprocessing (resize ratio,
mean/std, interpolation) so validation and serving prepare images exactly as the weights expect.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import __version__, checksums
from imgclf.artifact_files import (  # noqa: F401  (load_index, verify_files: the loader's API, defined torch-free)
    ARTIFACT_FORMAT,
    INDEX_FILE,
    META_FILE,
    WEIGHTS_FILE,
    check_meta,
    load_index,
    verify_files,
)
from imgclf.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        import torchvision

        from imgclf.model import arch_kwargs

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
    import torch

    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    with writing_to(model_dir) as out:
        (out / INDEX_FILE).write_text(json.dumps({str(i): n for i, n in enumerate(class_names)}, indent=1))
        tmp = out / (WEIGHTS_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, out / WEIGHTS_FILE)
        # imgclf.json last, with the checksums of the files written before it.
        recorded = checksums.record(out, (WEIGHTS_FILE, INDEX_FILE))
        (out / META_FILE).write_text(json.dumps({**asdict(meta), checksums.KEY: recorded}, indent=1))


def load_meta(model_dir: str | Path) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    known = set(ModelMeta.__dataclass_fields__)
    meta = {k: v for k, v in check_meta(path, checksums.read_json(path)).items() if k in known}
    meta["mean"], meta["std"] = tuple(meta.get("mean", IMAGENET_MEAN)), tuple(meta.get("std", IMAGENET_STD))
    kwargs = meta.get("model_kwargs", ())
    meta["model_kwargs"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs)
    return ModelMeta(**meta)


def load_artifact(model_dir: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """The one loader: the model in eval mode on `device`, its preprocessing settings and class names."""
    import torch

    from imgclf.model import build_model

    model_dir = Path(model_dir)
    verify_files(model_dir)
    meta = load_meta(model_dir)
    index_to_name = load_index(model_dir, meta.num_classes)
    model = build_model(meta.arch, meta.num_classes, "none", model_kwargs=dict(meta.model_kwargs))
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return Artifact(model=model, meta=meta, index_to_name=index_to_name)
