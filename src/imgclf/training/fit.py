"""The training loop: transfer learning with early stopping, checkpoints, DDP, metric lines.

Speed without changing results: DataLoader workers from the CPU count, pinned memory and AMP on CUDA,
channels_last, cudnn.benchmark. With a frozen backbone and no augmentation the backbone's output never
changes, so it is computed once (`cache-features`) and epochs train only the head on cached features.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler
from tqdm import tqdm

from imgclf import system
from imgclf import checkpoints, data, debugger, distributed, evaluation, formats, metrics
from imgclf.errors import TrainingInterrupted, UserError
from imgclf.hyperparameters import AUTO, Hyperparameters
from imgclf.model import ModelMeta, build_model, head, headless, save_artifact, writing_to

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


class _StopFlag:
    """SIGTERM sets it; the loop checks it between steps, checkpoints, and raises TrainingInterrupted."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading_main():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        print(
            "SIGTERM received: stopping after the current step and saving a checkpoint",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dataloader_workers(requested: int, procs_per_host: int) -> int:
    """-1: leave a core to the training process, at most 8 per process (the seeds used 1 and starved the GPU)."""
    if requested >= 0:
        return requested
    cpus = system.cpu_count()
    per_proc = max(1, cpus // procs_per_host)
    return min(8, per_proc - 1) if per_proc > 1 else 0


@dataclass
class _Datasets:
    classes: list[str]
    train: list[data.Sample]
    valid: list[data.Sample]
    test: list[data.Sample] | None
    # How each split opens a sample's key (None: a file path); see imgclf.formats.
    readers: dict[str, Any] | None = None


def _load_channels(hp: Hyperparameters, cfg: RunConfig) -> _Datasets:
    """Every channel in its own format (imagefolder / hdf5 / manifest), as (key, class index) samples."""
    options = formats.FormatOptions.from_hyperparameters(hp)
    train_ch = formats.load_channel(cfg.train_dir, options, channel="train", sample=hp.sample, seed=hp.seed)
    if hp.sample > 0:
        log.info("sample=%g: training on a stratified subsample of %d image(s)", hp.sample, len(train_ch.samples))
    readers = {"train": train_ch.reader, "valid": train_ch.reader, "test": None}
    if cfg.valid_dir is not None:
        valid_ch = formats.load_channel(cfg.valid_dir, options, train_ch.classes, channel="valid")
        valid, readers["valid"] = valid_ch.samples, valid_ch.reader
        train = train_ch.samples
    else:
        train, valid = data.stratified_split(train_ch.samples, hp.valid_fraction, hp.seed)
        log.info(
            "No valid channel: holding out %d of %d train images (stratified, seed %d)",
            len(valid),
            len(train_ch.samples),
            hp.seed,
        )
        if not valid:
            raise UserError("Too few train images to split a validation set; add a valid channel.")
    test = None
    if cfg.test_dir:
        test_ch = formats.load_channel(cfg.test_dir, options, train_ch.classes, channel="test")
        test, readers["test"] = test_ch.samples, test_ch.reader
    if len(train_ch.classes) < 2:
        raise UserError(f"Need at least 2 classes to train, found {len(train_ch.classes)} in {cfg.train_dir}.")
    log.info(
        "Classes: %d; images: train %d, valid %d, test %s",
        len(train_ch.classes),
        len(train),
        len(valid),
        len(test) if test is not None else "-",
    )
    log.info("Train images per class: %s", dict(sorted(data.class_counts(train).items())))
    return _Datasets(train_ch.classes, train, valid, test, readers)


def class_weights(samples: list[data.Sample], num_classes: int) -> torch.Tensor:
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


class _Trainer:
    def __init__(
        self,
        hp: Hyperparameters,
        cfg: RunConfig,
        layout: distributed.Layout,
        feature_cache: dict | None,
        profiler: Any,
        on_epoch: Callable | None,
    ):
        self.hp, self.cfg, self.layout = hp, cfg, layout
        self.device = layout.device
        self.on_epoch, self.profiler = on_epoch, profiler
        self.feature_cache = feature_cache if feature_cache is not None else {}
        self.use_amp = hp.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        # fp16 (GPUs without bf16, e.g. the seeds' T4 on ml.g4dn) needs loss scaling or small gradients underflow;
        # disabled, the scaler passes everything through unchanged.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.workers = dataloader_workers(hp.num_workers, layout.procs_per_host)

        self.sets = _load_channels(hp, cfg)
        self.meta = ModelMeta.for_training(hp.arch, len(self.sets.classes), hp.image_size, hp.pretrained_weights)
        self.model = build_model(
            hp.arch, len(self.sets.classes), hp.pretrained_weights, model_kwargs=dict(self.meta.model_kwargs)
        )
        _check_input_size(self.model, hp.arch, hp.image_size)
        # augment "auto": only when fine-tuning; a frozen backbone then gets the cached-feature path below.
        self.augment = hp.train_backbone if hp.augment == AUTO else hp.augment
        # Cached features need a Linear head that is the network's last step (all but squeezenet's conv head).
        self.cached = (
            not hp.train_backbone and not self.augment and hp.cache_features and isinstance(head(self.model), nn.Linear)
        )
        log.info(
            "augment %s, backbone %s, %s",
            "on" if self.augment else "off",
            "fine-tuned" if hp.train_backbone else "frozen",
            "cached features" if self.cached else "backbone runs every epoch",
        )
        for p in self.model.parameters():
            p.requires_grad = hp.train_backbone
        for p in head(self.model).parameters():
            p.requires_grad = True
        self.model.to(self.device, memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # In cached-feature mode only the head ever runs a training step.
        self.trainable = head(self.model) if self.cached else self.model
        weight = None
        if hp.class_weights == "auto":
            weight = class_weights(self.sets.train, len(self.sets.classes))
            log.info("class-weights auto: %s", [round(w, 4) for w in weight.tolist()])
        self.criterion = nn.CrossEntropyLoss(weight=weight.to(self.device) if weight is not None else None)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=hp.lr, weight_decay=hp.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=hp.epochs)
        self.step_module: nn.Module = self.trainable
        if layout.distributed:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.trainable, device_ids=[layout.local_rank] if layout.use_cuda else None
            )
        self.debug = (
            debugger.create(hp, cfg.debughook_config, cfg.debugger_out) if layout.is_main else debugger.Debugger(None)
        )
        self.debug.register(self.trainable, self.criterion)

    # ---- data -----------------------------------------------------------------------------------------------

    def _balanced_sampler(self, labels: list[int]) -> WeightedRandomSampler:
        """Every class drawn equally often (with replacement); under DDP each rank draws its share."""
        counts = torch.bincount(torch.tensor(labels), minlength=len(self.sets.classes)).double()
        weights = (1.0 / counts.clamp(min=1))[torch.tensor(labels)]
        n = math.ceil(len(labels) / self.layout.world_size)
        generator = torch.Generator().manual_seed(self.hp.seed + self.layout.rank)
        return WeightedRandomSampler(weights, n, replacement=True, generator=generator)

    def _image_loader(self, samples, train: bool, distributed_shard: bool, split: str = "train") -> DataLoader:
        transform = data.train_transform(self.meta, self.augment) if train else data.eval_transform(self.meta)
        reader = (self.sets.readers or {}).get(split)
        dataset = data.ImageDataset(samples, transform, reader)
        sampler = None
        if train and self.hp.balanced_sampler:
            sampler = self._balanced_sampler([label for _, label in samples])
        elif distributed_shard and self.layout.distributed:
            sampler = DistributedSampler(
                dataset, self.layout.world_size, self.layout.rank, shuffle=True, seed=self.hp.seed
            )
        return DataLoader(
            dataset,
            batch_size=self.hp.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=data.collate_skip_bad,
            persistent_workers=self.workers > 0,
            generator=torch.Generator().manual_seed(self.hp.seed),
        )

    def _features(self, name: str, samples) -> TensorDataset:
        """Backbone outputs for a split, computed once per (data, backbone) and kept in `feature_cache`."""
        key = (
            name,
            tuple(samples),
            self.hp.arch,
            self.hp.image_size,
            self.hp.pretrained_weights,
            self.hp.seed,
        )
        if key not in self.feature_cache:
            loader = self._image_loader(samples, train=False, distributed_shard=False, split=name)
            feats, labels = [], []
            with torch.no_grad(), headless(self.model) as backbone, self._autocast():
                backbone.eval()
                for batch in tqdm(
                    loader, desc=f"features {name}", leave=False, disable=not self.layout.is_main or None
                ):
                    if batch is None:
                        continue
                    x, y = batch
                    x = x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
                    feats.append(backbone(x).float().cpu())
                    labels.append(y)
            self.feature_cache[key] = TensorDataset(torch.cat(feats), torch.cat(labels))
        return self.feature_cache[key]

    def _loaders(self) -> tuple[DataLoader, DataLoader, DataLoader | None]:
        s = self.sets
        if not self.cached:
            test = self._image_loader(s.test, False, False, "test") if s.test else None
            return (
                self._image_loader(s.train, True, True, "train"),
                self._image_loader(s.valid, False, False, "valid"),
                test,
            )

        def tensor_loader(ds: TensorDataset, train: bool) -> DataLoader:
            sampler = None
            if train and self.hp.balanced_sampler:
                sampler = self._balanced_sampler(ds.tensors[1].tolist())
            elif train and self.layout.distributed:
                sampler = DistributedSampler(ds, self.layout.world_size, self.layout.rank, seed=self.hp.seed)
            return DataLoader(
                ds,
                batch_size=self.hp.batch_size,
                shuffle=train and sampler is None,
                sampler=sampler,
                generator=torch.Generator().manual_seed(self.hp.seed),
            )

        test = tensor_loader(self._features("test", s.test), False) if s.test else None
        return (
            tensor_loader(self._features("train", s.train), True),
            tensor_loader(self._features("valid", s.valid), False),
            test,
        )

    # ---- steps ----------------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.use_amp)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True)

    def _set_train_mode(self) -> None:
        # A frozen backbone stays in eval mode: its BatchNorm statistics must not drift with our batches.
        self.model.train(self.hp.train_backbone)
        head(self.model).train()

    def train_epoch(self, loader: DataLoader, epoch: int, stop: _StopFlag) -> float:
        self._set_train_mode()
        self.debug.mode("train")
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(
            total=len(loader),
            desc=f"epoch {epoch}/{self.hp.epochs}",
            leave=False,
            disable=not self.layout.is_main or None,
            mininterval=2,
        )
        t_data = time.perf_counter()
        for step, batch in enumerate(loader):
            if batch is None:
                continue
            x, y = self._to_device(batch[0]), batch[1].to(self.device, non_blocking=True)
            t_compute = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss = self.criterion(self.step_module(x), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item() * len(y)
            count += len(y)
            t_end = time.perf_counter()
            if self.profiler is not None:
                self.profiler.on_step(step, t_compute - t_data, t_end - t_compute)
            bar.update()
            t_data = time.perf_counter()
            if stop.signum is not None:
                break
        bar.close()
        total, count = distributed.all_reduce_sum([total, count], self.layout)
        return total / max(count, 1)

    def evaluate(self, loader: DataLoader, mode: str = "eval") -> tuple[float, float]:
        """(loss, accuracy) over the whole split; every rank evaluates all of it, so decisions agree."""
        loss, report = self.evaluate_report(loader, mode)
        return loss, report["accuracy"]

    @torch.no_grad()
    def evaluate_report(self, loader: DataLoader, mode: str = "eval") -> tuple[float, dict[str, Any]]:
        """(loss, `evaluation.report`: accuracy, balanced accuracy, macro-F1, AUC, per-class, confusion matrix)."""
        self.model.eval()
        self.debug.mode(mode)
        total, count = 0.0, 0
        all_probs, all_labels = [], []
        for batch in loader:
            if batch is None:
                continue
            x, y = self._to_device(batch[0]), batch[1].to(self.device)
            with self._autocast():
                logits = self.trainable(x)
                loss = self.criterion(logits, y)
            total += loss.item() * len(y)
            count += len(y)
            all_probs.append(torch.softmax(logits.float(), 1).cpu())
            all_labels.append(y.cpu())
        if count == 0:
            raise UserError("No readable images left to evaluate on.")
        report = evaluation.report(torch.cat(all_labels).numpy(), torch.cat(all_probs).numpy(), self.sets.classes)
        return total / count, report

    # ---- checkpoints ----------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {
            "arch": self.hp.arch,
            "classes": self.sets.classes,
            "image_size": self.hp.image_size,
            "train_backbone": self.hp.train_backbone,
            "cached": self.cached,
        }

    def checkpoint_state(self, epoch: int, best: dict, history: list) -> dict[str, Any]:
        return {
            "identity": self._identity(),
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": best,
            "history": history,
            "rng": torch.get_rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> tuple[int, dict, list]:
        if state["identity"] != self._identity():
            raise UserError(
                f"The checkpoint directory {self.cfg.checkpoint_dir} holds a checkpoint of a different run "
                f"({state['identity']} vs {self._identity()}). Use an empty checkpoint directory "
                "(checkpoint_s3_uri) for a new configuration."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        return state["epoch"], state["best"], state["history"]

    # ---- the run --------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        hp, main = self.hp, self.layout.is_main
        train_loader, valid_loader, test_loader = self._loaders()
        start_epoch, history = 0, []
        best = {"valid_loss": math.inf, "epoch": 0, "state": None, "bad_epochs": 0}
        resumed = checkpoints.load_latest(self.cfg.checkpoint_dir)
        if resumed is not None:
            start_epoch, best, history = self.restore(resumed)
            if main:
                print(f"Resumed from checkpoint after epoch {start_epoch}", flush=True)
        stopped_early = best["bad_epochs"] >= hp.patience > 0
        with _StopFlag() as stop:
            for epoch in range(start_epoch + 1, hp.epochs + 1):
                if stopped_early:
                    break
                t0 = time.perf_counter()
                train_loss = self.train_epoch(train_loader, epoch, stop)
                if stop.signum is not None:
                    self._save_checkpoint(epoch - 1, best, history)
                    raise TrainingInterrupted(
                        f"Training stopped by signal {stop.signum} during epoch {epoch}; checkpoint saved in "
                        f"{self.cfg.checkpoint_dir}. Restart with the same checkpoint directory to resume."
                        if self.cfg.checkpoint_dir
                        else f"Training stopped by signal {stop.signum} during epoch {epoch} (no checkpoint directory)."
                    )
                valid_loss, valid_report = self.evaluate_report(valid_loader)
                valid_acc = valid_report["accuracy"]
                self.scheduler.step()
                line = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "valid_accuracy": valid_acc,
                    **evaluation.metric_values("valid", valid_report),
                    "epoch_seconds": time.perf_counter() - t0,
                }
                history.append(line)
                if valid_loss < best["valid_loss"]:
                    best = {
                        "valid_loss": valid_loss,
                        "valid_accuracy": valid_acc,
                        "valid_report": valid_report,
                        "epoch": epoch,
                        "bad_epochs": 0,
                        "state": copy.deepcopy(self.model.state_dict()),
                    }
                else:
                    best["bad_epochs"] += 1
                stopped_early = best["bad_epochs"] >= hp.patience > 0
                if main:
                    self._save_checkpoint(epoch, best, history)  # first: a printed epoch is a saved epoch
                    metrics.emit(line)
                    if stopped_early:
                        print(
                            f"Early stopping: valid_loss has not improved for {hp.patience} epochs; "
                            f"keeping epoch {best['epoch']}",
                            flush=True,
                        )
                    if self.on_epoch is not None:
                        self.on_epoch(epoch, line)
        self.model.load_state_dict(best["state"])
        result = {
            "valid_loss": best["valid_loss"],
            "valid_accuracy": best.get("valid_accuracy", 0.0),
            "best_epoch": best["epoch"],
            "epochs": len(history),
            "history": history,
        }
        reports = {}
        if best.get("valid_report") is not None:
            reports["valid"] = best["valid_report"]
            result.update(evaluation.metric_values("valid", best["valid_report"]))
        if test_loader is not None:
            test_loss, test_report = self.evaluate_report(test_loader, mode="predict")
            test_values = {"test_loss": test_loss, "test_accuracy": test_report["accuracy"]}
            test_values.update(evaluation.metric_values("test", test_report))
            reports["test"] = test_report
            result.update(test_values)
            if main:
                metrics.emit(test_values)
        if main:
            if reports:
                split = "test" if "test" in reports else "valid"
                log.info("Per-class metrics (%s):\n%s", split, evaluation.format_table(reports[split]))
                with writing_to(self.cfg.model_dir):
                    evaluation.write(self.cfg.model_dir, reports, self.sets.classes)
            save_artifact(self.model, self.meta, self.sets.classes, self.cfg.model_dir)  # last: model.pt means done
            log.info("Model written to %s", self.cfg.model_dir)
        self.debug.close()
        return result

    def _save_checkpoint(self, epoch: int, best: dict, history: list) -> None:
        if self.cfg.checkpoint_dir is not None and self.layout.is_main:
            checkpoints.save(self.cfg.checkpoint_dir, epoch, self.checkpoint_state(epoch, best, history))


def fit(
    hp: Hyperparameters,
    cfg: RunConfig,
    *,
    on_epoch: Callable | None = None,
    feature_cache: dict | None = None,
    profiler: Any = None,
    layout: distributed.Layout | None = None,
) -> dict[str, Any]:
    """Train, write the artifact to cfg.model_dir, return final metrics (valid_*, test_*, best_epoch, history)."""
    layout = layout or distributed.single_process()
    seed_everything(hp.seed)
    distributed.init(layout)
    try:
        log.info("Hyperparameters: %s", dict(hp.values))
        return _Trainer(hp, cfg, layout, feature_cache, profiler, on_epoch).run()
    finally:
        distributed.shutdown()
