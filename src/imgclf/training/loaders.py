"""A run's data: its channels read in their formats, the datasets, and the DataLoaders (images, or the backbone's
cached features when the backbone is frozen and inputs are not augmented)."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler
from tqdm import tqdm

from imgclf import channel_formats, channels, shards, system
from imgclf.channels import Sample
from imgclf.errors import UserError
from imgclf.hyperparameters import Hyperparameters
from imgclf.images import eval_transform, open_rgb, train_transform
from imgclf.model import headless
from imgclf.training import distributed

if TYPE_CHECKING:
    from imgclf.training.setup import Run, RunConfig

log = logging.getLogger(__name__)


class ImageDataset(torch.utils.data.Dataset):
    """(tensor, label) pairs; an image that fails to decode at read time yields None (see `collate_skip_bad`).

    `reader(key) -> RGB PIL image` opens a sample's key: a file path (`images.open_rgb`, the default) or, for HDF5
    channels, a dataset name in the file (`channel_formats.HDF5Reader`, which opens the file once per worker).
    """

    def __init__(self, samples: list[Sample], transform, reader=None):
        self.samples = samples
        self.transform = transform
        self.reader = reader or open_rgb

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        key, label = self.samples[i]
        try:
            return self.transform(self.reader(key)), label
        except (OSError, ValueError, SyntaxError, KeyError, Image.DecompressionBombError) as exc:
            log.warning("Skipping %s: %s", key, exc)
            return None


def collate_skip_bad(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


def dataloader_workers(requested: int, procs_per_host: int) -> int:
    """-1: leave a core to the training process, at most 8 per process (the seeds used 1 and starved the GPU)."""
    if requested >= 0:
        return requested
    cpus = system.cpu_count()
    per_proc = max(1, cpus // procs_per_host)
    return min(8, per_proc - 1) if per_proc > 1 else 0


# ---- channels -> samples ----------------------------------------------------------------------------------------


@dataclass
class Datasets:
    classes: list[str]
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample] | None
    # How each split opens a sample's key (None: a file path); see imgclf.channel_formats.
    readers: dict[str, Any] | None = None
    # Train samples each rank draws per epoch when hosts hold shares of different sizes (ShardedByS3Key).
    train_per_rank: int | None = None


def _host_share(train_ch: channels.Channel, cfg: RunConfig, layout: distributed.Layout) -> channels.Channel:
    """The train channel when SageMaker gave this host only its share of the objects (ShardedByS3Key): one class
    list for all hosts (the union: a host may lack a class), and a valid channel of its own (held out of each
    host's share, validation would differ between hosts and so would early-stopping decisions)."""
    if train_ch.format not in ("imagefolder",):
        raise UserError(
            f"The train channel is split across hosts (ShardedByS3Key), but its {train_ch.format} layout keeps "
            "labels or the label map in files one host cannot share with another. Use FullyReplicated (the "
            "default; with tar shards and FastFile each host fetches only the shards its ranks read), or an "
            "ImageFolder channel."
        )
    if cfg.valid_dir is None:
        raise UserError(
            "The train channel is split across hosts (ShardedByS3Key) and there is no valid channel: give one, "
            "so that every host validates on the same images."
        )
    # Sorted like scan_image_folder sorts a channel's folders: the same order as one host reading all of it.
    classes = sorted({name for host in distributed.all_gather(train_ch.classes, layout) for name in host})
    index = {name: i for i, name in enumerate(classes)}
    samples = [(key, index[train_ch.classes[label]]) for key, label in train_ch.samples]
    return channels.Channel(samples, classes, train_ch.skipped, train_ch.reader, train_ch.format)


def load_datasets(hp: Hyperparameters, cfg: RunConfig, layout: distributed.Layout | None = None) -> Datasets:
    """Every channel in its own format (imagefolder / hdf5 / manifest / webdataset), as (key, class index) samples."""
    layout = layout or distributed.single_process()
    options = replace(channel_formats.FormatOptions.from_hyperparameters(hp), check_images=cfg.check_images)
    train_ch = channel_formats.load_channel(cfg.train_dir, options, channel="train", sample=hp.sample, seed=hp.seed)
    per_rank = None
    if cfg.train_host_sharded:
        train_ch = _host_share(train_ch, cfg, layout)
        # Hosts' shares differ in size; DDP needs every rank to take as many steps: the largest share sets it.
        per_rank = math.ceil(max(distributed.all_gather(len(train_ch.samples), layout)) / layout.procs_per_host)
    if hp.sample > 0:
        log.info("sample=%g: training on a stratified subsample of %d image(s)", hp.sample, len(train_ch.samples))
    readers = {"train": train_ch.reader, "valid": train_ch.reader, "test": None}
    if cfg.valid_dir is not None:
        valid_ch = channel_formats.load_channel(cfg.valid_dir, options, train_ch.classes, channel="valid")
        valid, readers["valid"] = valid_ch.samples, valid_ch.reader
        train = train_ch.samples
    else:
        train, valid = channels.stratified_split(train_ch.samples, hp.valid_fraction, hp.seed)
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
        test_ch = channel_formats.load_channel(cfg.test_dir, options, train_ch.classes, channel="test")
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
    log.info("Train images per class: %s", dict(sorted(channels.class_counts(train).items())))
    return Datasets(train_ch.classes, train, valid, test, readers, per_rank)


# ---- samples -> loaders -----------------------------------------------------------------------------------------


def _balanced_sampler(run: Run, labels: list[int]) -> WeightedRandomSampler:
    """Every class drawn equally often (with replacement); under DDP each rank draws its share."""
    counts = torch.bincount(torch.tensor(labels), minlength=len(run.sets.classes)).double()
    weights = (1.0 / counts.clamp(min=1))[torch.tensor(labels)]
    n = run.sets.train_per_rank or math.ceil(len(labels) / run.layout.world_size)
    generator = torch.Generator().manual_seed(run.hp.seed + run.layout.rank)
    return WeightedRandomSampler(weights, n, replacement=True, generator=generator)


def _train_sampler(run: Run, dataset, labels: list[int]):
    """Balanced, or split across ranks under DDP: by global rank when every host has the whole channel, among
    this host's ranks when SageMaker split it by host (then every rank draws `train_per_rank`, repeating a few of
    its samples when its host's share is smaller); None: plain shuffling in one process."""
    if run.hp.balanced_sampler:
        sampler = _balanced_sampler(run, labels)
    elif run.layout.distributed:
        replicas, rank = run.layout.data_split(run.cfg.train_host_sharded)
        sampler = DistributedSampler(dataset, replicas, rank, shuffle=True, seed=run.hp.seed)
        if run.sets.train_per_rank:
            sampler.num_samples = run.sets.train_per_rank
            sampler.total_size = run.sets.train_per_rank * replicas
    else:
        return None
    log.info(
        "train data: host %s rank %d of %d draws %d of this host's %d train sample(s) per epoch (%s)",
        run.layout.current_host,
        run.layout.rank,
        run.layout.world_size,
        len(sampler),
        len(labels),
        "split among this host's ranks: the channel is sharded by host"
        if run.cfg.train_host_sharded
        else "split by global rank",
    )
    return sampler


def sample_set_digest(keys: Iterable[str]) -> str:
    """An order-free fingerprint of a multiset of sample keys: the sum of their 64-bit hashes modulo 2**64. Ranks
    that share no sample have digests that add up to the digest of their union (how a log shows that hosts read
    disjoint shares covering the data)."""
    total = sum(int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") for k in keys)
    return f"{total % 2**64:016x}"


def _epoch_keys(run: Run, loader) -> list[str] | None:
    """The train sample keys, relative to the channel, this rank draws in the epoch the loader is set to; None
    outside DDP."""
    if isinstance(loader, shards.CappedLoader) and isinstance(loader.loader.dataset, shards.ShardStream):
        # A stream reads every listed sample of its shards once per pass, only the order changes: the set is exact
        # without seeing the samples (they are read in DataLoader workers). Hashing them each epoch costs far less
        # than reading them.
        return loader.loader.dataset.sample_keys() if run.layout.distributed else None
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler) or not isinstance(loader.dataset, ImageDataset):
        return None
    samples, root = loader.dataset.samples, os.path.join(run.cfg.train_dir, "")
    return [samples[i][0].removeprefix(root) for i in sampler]


def log_epoch_share(run: Run, loader, epoch: int) -> None:
    """Under DDP, which train samples this rank draws in `epoch`: their count and `sample_set_digest` of their keys
    relative to the channel. For a shard stream, the samples its shards list (an image that then fails to decode
    counts: this rank read it, no other did); of those, at most `_stream_loader`'s logged steps x batch size are
    trained on, drop_last and the step count common to every rank leaving out the rest."""
    keys = _epoch_keys(run, loader)
    if keys is None:
        return
    log.info(
        "epoch %d: host %s rank %d draws %d train sample(s), digest %s",
        epoch,
        run.layout.current_host,
        run.layout.rank,
        len(keys),
        sample_set_digest(keys),
    )


def _stream_loader(run: Run, samples, transform, source, train: bool):
    """A shard channel's split, streamed (shards.ShardStream); the train split divided between the processes."""
    if train and run.hp.balanced_sampler:
        raise UserError(
            "balanced-sampler draws images at random, which shard channels (read as streams) cannot do; "
            "use class-weights auto instead."
        )
    split = train and run.layout.distributed
    world, rank = run.layout.data_split(run.cfg.train_host_sharded) if split else (1, 0)
    dataset = shards.ShardStream(
        source, samples, transform, rank=rank, world_size=world, seed=run.hp.seed, shuffle=train
    )
    loader = DataLoader(
        dataset,
        batch_size=run.hp.batch_size,
        num_workers=run.workers,
        pin_memory=run.device.type == "cuda",
        collate_fn=collate_skip_bad,
        persistent_workers=run.workers > 0,
        # A stream's last batch can be one image, which BatchNorm cannot train on; the next epoch's order differs.
        drop_last=train,
    )
    steps = dataset.batches(run.hp.batch_size, run.workers, drop_last=train)
    if split:
        steps = distributed.all_reduce_min(steps, run.layout)
        log.info(
            "train data: host %s rank %d reads %d sample(s) from its shards per epoch and trains on %d batch(es) "
            "of up to %d (drop_last and the step count common to all ranks leave out the rest)",
            run.layout.current_host,
            run.layout.rank,
            dataset.sample_count(),
            steps,
            run.hp.batch_size,
        )
    return shards.CappedLoader(loader, steps)


def _image_loader(run: Run, samples, train: bool, split: str = "train") -> DataLoader:
    transform = train_transform(run.meta, run.augment) if train else eval_transform(run.meta)
    reader = (run.sets.readers or {}).get(split)
    if isinstance(reader, shards.ShardSource):
        return _stream_loader(run, samples, transform, reader, train)
    dataset = ImageDataset(samples, transform, reader)
    sampler = _train_sampler(run, dataset, [label for _, label in samples]) if train else None
    return DataLoader(
        dataset,
        batch_size=run.hp.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=run.workers,
        pin_memory=run.device.type == "cuda",
        collate_fn=collate_skip_bad,
        persistent_workers=run.workers > 0,
        generator=torch.Generator().manual_seed(run.hp.seed),
    )


def _features(run: Run, name: str, samples) -> TensorDataset:
    """Backbone outputs for a split, computed once per (data, backbone) and kept in `run.feature_cache`."""
    hp = run.hp
    key = (name, tuple(samples), hp.arch, hp.image_size, hp.pretrained_weights, hp.seed)
    if key not in run.feature_cache:
        loader = _image_loader(run, samples, train=False, split=name)
        feats, labels = [], []
        with torch.no_grad(), headless(run.model) as backbone, run.autocast():
            backbone.eval()
            for batch in tqdm(loader, desc=f"features {name}", leave=False, disable=not run.layout.is_main or None):
                if batch is None:
                    continue
                x, y = batch
                x = x.to(run.device, non_blocking=True, memory_format=torch.channels_last)
                feats.append(backbone(x).float().cpu())
                labels.append(y)
        run.feature_cache[key] = TensorDataset(torch.cat(feats), torch.cat(labels))
    return run.feature_cache[key]


def _tensor_loader(run: Run, ds: TensorDataset, train: bool) -> DataLoader:
    sampler = _train_sampler(run, ds, ds.tensors[1].tolist()) if train else None
    return DataLoader(
        ds,
        batch_size=run.hp.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(run.hp.seed),
    )


def build_loaders(run: Run) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """(train, valid, test or None): image loaders, or loaders over cached backbone features."""
    s = run.sets
    if not run.cached:
        test = _image_loader(run, s.test, False, "test") if s.test else None
        return (
            _image_loader(run, s.train, True, "train"),
            _image_loader(run, s.valid, False, "valid"),
            test,
        )
    test = _tensor_loader(run, _features(run, "test", s.test), False) if s.test else None
    return (
        _tensor_loader(run, _features(run, "train", s.train), True),
        _tensor_loader(run, _features(run, "valid", s.valid), False),
        test,
    )
