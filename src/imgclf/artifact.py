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
from imgclf.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
INDEX_FILE = "index_to_name.json"
META_FILE = "imgclf.json"
ARTIFACT_FORMAT = 1

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


def _check_meta(path: Path, raw: object) -> dict[str, Any]:
    """imgclf.json's fields with their types and ranges checked: it is read before any weight is."""
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object.")
    known = {f for f in ModelMeta.__dataclass_fields__}
    meta = {k: v for k, v in raw.items() if k in known}  # other keys (checksums, engines) belong to others

    def bad(field: str, why: str) -> UserError:
        return UserError(f"{path}: '{field}' {why} (got {raw.get(field)!r}).")

    if not isinstance(meta.get("arch"), str) or not meta["arch"]:
        raise bad("arch", "must name a torchvision architecture")
    for field, low, high in (("num_classes", 1, 1_000_000), ("image_size", 8, 8192), ("resize_size", 8, 8192)):
        value = meta.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(field, f"must be an integer in {low}..{high}")
    for field in ("mean", "std"):
        value = meta.get(field, [0.0, 0.0, 1.0])
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
            raise bad(field, "must be three numbers")
    if any(v <= 0 for v in meta.get("std", [1.0])):
        raise bad("std", "must be positive")
    return meta


def load_meta(model_dir: str | Path) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    raw = checksums.read_json(path)
    if isinstance(raw, dict) and raw.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{path} has artifact format {raw.get('format')}; this imgclf reads {ARTIFACT_FORMAT}.")
    meta = _check_meta(path, raw)
    meta["mean"], meta["std"] = tuple(meta.get("mean", IMAGENET_MEAN)), tuple(meta.get("std", IMAGENET_STD))
    kwargs = meta.get("model_kwargs", ())
    meta["model_kwargs"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs)
    return ModelMeta(**meta)


def load_index(model_dir: Path, num_classes: int) -> dict[int, str]:
    """index_to_name.json: exactly the classes 0..num_classes-1, each a short name."""
    path = model_dir / INDEX_FILE
    raw = checksums.read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UserError(f'{path} must map class indices to names: {{"0": "name", ...}}.')
    try:
        index = {int(k): v for k, v in raw.items()}
    except ValueError:
        raise UserError(f"{path}: every key must be a class index (0, 1, ...).") from None
    if sorted(index) != list(range(num_classes)):
        raise UserError(f"{path} names {len(index)} classes; the model's head has {num_classes} (imgclf.json).")
    if any(len(name) > 1024 for name in index.values()):
        raise UserError(f"{path}: class names are at most 1,024 characters.")
    return index


def verify_files(model_dir: str | Path) -> None:
    """The checksums imgclf.json records, checked (torch-free: `imgclf serve` runs it before starting MMS)."""
    model_dir = Path(model_dir)
    raw = checksums.read_json(model_dir / META_FILE)
    recorded = raw.get(checksums.KEY) if isinstance(raw, dict) else None
    if not checksums.verify(model_dir, recorded):
        log.warning("%s records no checksums (an artifact from before imgclf recorded them): not verified", model_dir)


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
