"""Set-up of a training run: data, network (frozen or fine-tuned), precision, optimiser, DDP and the debugger hook,
gathered in one `Run` the loop's steps read."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgclf.artifact import ModelMeta
from imgclf.errors import UserError
from imgclf.hyperparameters import AUTO, Hyperparameters
from imgclf.model import build_model, head
from imgclf.training import debugger, distributed
from imgclf.training.loaders import Datasets, dataloader_workers, load_datasets

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Where a run reads and writes (the SageMaker channels and directories, or local paths)."""

    train_dir: Path
    model_dir: Path
    valid_dir: Path | None = None
    test_dir: Path | None = None
    checkpoint_dir: Path | None = None
    debugger_out: Path | None = None
    debughook_config: Path | None = None
    # The train channel was already split between hosts (SageMaker ShardedByS3Key): shard channels are then split
    # only between this host's processes (shards.reader_slot).
    split_by_host: bool = False


@dataclass
class Run:
    """Everything one training run works with; built once by `set_up`."""

    hp: Hyperparameters
    cfg: RunConfig
    layout: distributed.Layout
    sets: Datasets
    meta: ModelMeta
    model: nn.Module
    trainable: nn.Module  # the head alone with cached features, else the whole model
    step_module: nn.Module  # `trainable`, wrapped in DDP when distributed
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    augment: bool
    cached: bool
    workers: int
    debug: debugger.Debugger
    profiler: Any = None
    feature_cache: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.layout.device

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.use_amp)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True)


def class_weights(samples: list, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced dataset gets 1.0 everywhere (scikit-learn's 'balanced')."""
    counts = torch.bincount(torch.tensor([label for _, label in samples]), minlength=num_classes).double()
    weights = counts.sum() / (num_classes * counts.clamp(min=1))
    return weights.float()


def _check_input_size(model: nn.Module, arch: str, image_size: int) -> None:
    """One tiny forward pass: an image size the architecture cannot take fails now, in plain words."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 3, image_size, image_size))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise UserError(f"{arch} cannot take image-size {image_size}: {first}. Try a larger image-size.") from None


def _network(hp: Hyperparameters, num_classes: int) -> tuple[ModelMeta, nn.Module]:
    meta = ModelMeta.for_training(hp.arch, num_classes, hp.image_size, hp.pretrained_weights)
    model = build_model(hp.arch, num_classes, hp.pretrained_weights, model_kwargs=dict(meta.model_kwargs))
    _check_input_size(model, hp.arch, hp.image_size)
    return meta, model


def _freeze(model: nn.Module, train_backbone: bool) -> None:
    """The head always trains; the backbone only when fine-tuning."""
    for p in model.parameters():
        p.requires_grad = train_backbone
    for p in head(model).parameters():
        p.requires_grad = True


def _criterion(hp: Hyperparameters, sets: Datasets, device: torch.device) -> nn.Module:
    weight = None
    if hp.class_weights == "auto":
        weight = class_weights(sets.train, len(sets.classes))
        log.info("class-weights auto: %s", [round(w, 4) for w in weight.tolist()])
    return nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)


def _precision(hp: Hyperparameters, device: torch.device) -> tuple[bool, torch.dtype, torch.amp.GradScaler]:
    """AMP on CUDA only (bf16 where supported); fp16 (GPUs without bf16, e.g. the seeds' T4 on ml.g4dn) needs
    loss scaling or small gradients underflow; disabled, the scaler passes everything through unchanged."""
    use_amp = hp.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    return use_amp, amp_dtype, torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)


def set_up(
    hp: Hyperparameters, cfg: RunConfig, layout: distributed.Layout, feature_cache: dict | None, profiler: Any
) -> Run:
    """Data, network (frozen backbone or fine-tuned, cached features or not), loss, optimiser, DDP, debugger."""
    device = layout.device
    use_amp, amp_dtype, scaler = _precision(hp, device)
    workers = dataloader_workers(hp.num_workers, layout.procs_per_host)

    sets = load_datasets(hp, cfg)
    meta, model = _network(hp, len(sets.classes))
    # augment "auto": only when fine-tuning; a frozen backbone then gets the cached-feature path.
    augment = hp.train_backbone if hp.augment == AUTO else hp.augment
    # Cached features need a Linear head that is the network's last step (all but squeezenet's conv head).
    cached = not hp.train_backbone and not augment and hp.cache_features and isinstance(head(model), nn.Linear)
    log.info(
        "augment %s, backbone %s, %s",
        "on" if augment else "off",
        "fine-tuned" if hp.train_backbone else "frozen",
        "cached features" if cached else "backbone runs every epoch",
    )
    _freeze(model, hp.train_backbone)
    model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # In cached-feature mode only the head ever runs a training step.
    trainable = head(model) if cached else model
    criterion = _criterion(hp, sets, device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=hp.lr, weight_decay=hp.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.epochs)
    step_module: nn.Module = trainable
    if layout.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[layout.local_rank] if layout.use_cuda else None
        )
    debug = debugger.create(hp, cfg.debughook_config, cfg.debugger_out) if layout.is_main else debugger.Debugger(None)
    debug.register(trainable, criterion)
    return Run(
        hp=hp,
        cfg=cfg,
        layout=layout,
        sets=sets,
        meta=meta,
        model=model,
        trainable=trainable,
        step_module=step_module,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        use_amp=use_amp,
        amp_dtype=amp_dtype,
        augment=augment,
        cached=cached,
        workers=workers,
        debug=debug,
        profiler=profiler,
        feature_cache=feature_cache if feature_cache is not None else {},
    )
