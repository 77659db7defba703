"""The data side of a run: transforms from specs, loaders, the cached path, and `build_data`.

Transforms use torchvision.transforms.v2; `ToTensor` is v2's recommended
equivalent of v1's (ToImage + ToDtype(float32, scale=True)). Datasets live in
`images`, samplers in `samplers`.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from trainkit import specs
from trainkit.errors import ConfigError, DataError
from trainkit.images import BadSample, open_dataset
from trainkit.samplers import EpochSampler, SeededSamples, build_sampler, epoch_seed, expected_mix

# --------------------------------------------------------------------------- transforms


def build_transform(calls: list[specs.Call]) -> v2.Compose:
    names = specs.transforms()
    out = []
    for call in calls:
        try:
            out.append(names[call.name](*call.args, **call.kwargs))
        except Exception as exc:  # the constructor's own complaint, with the key path
            raise ConfigError(f"{call.path}: {call.name} rejected its arguments: {exc}") from None
    return v2.Compose(out)


def normalize_of(calls: list[specs.Call]) -> specs.Call | None:
    return next((c for c in calls if c.name == "Normalize"), None)


def val_calls(cfg: Any) -> list[specs.Call]:
    """The val transforms: as given, or ToTensor plus the Normalize of train."""
    if cfg.transforms.val_calls is not None:
        return cfg.transforms.val_calls
    calls = [specs.Call("ToTensor", path="data.transforms.val")]
    norm = normalize_of(cfg.transforms.train_calls)
    return calls + ([norm] if norm else [])


def train_calls(cfg: Any) -> list[specs.Call]:
    return cfg.transforms.train_calls or [specs.Call("ToTensor", path="data.transforms.train")]


def unnormalize(images: torch.Tensor, calls: list[specs.Call]) -> torch.Tensor:
    norm = normalize_of(calls)
    if norm is None:
        return images
    kw = dict(zip(("mean", "std"), norm.args)) | norm.kwargs
    mean = torch.tensor(kw["mean"], dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(kw["std"], dtype=images.dtype).view(1, -1, 1, 1)
    return images * std + mean


# --------------------------------------------------------------------------- loaders


def collate(batch: list[tuple[Any, int]]) -> tuple[Any, Any, list[str]]:
    """Stack the good samples; hand bad files' paths back beside them."""
    good = [s for s in batch if not isinstance(s[0], BadSample)]
    bad = [f"{s[0].path} ({s[0].reason})" for s in batch if isinstance(s[0], BadSample)]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Data:
    """Everything the engine needs from the data side."""

    cfg: Any
    seed: int
    classes: list[str]
    train_set: Dataset | None
    val_set: Dataset
    train_loader: DataLoader | None
    val_loader: DataLoader
    train_calls: list[specs.Call]
    mix: list[float] = field(default_factory=list)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)  # said once at start (cache, per-sample fallbacks)
    lockstep: bool = False  # under DDP every rank must take every training step, even one with no good image
    sample_shape: tuple[int, ...] = ()  # one training sample's shape, for the empty batch of such a step

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole training epoch."""
        n, bs = self.train_loader.sampler.total, self.train_loader.batch_size
        return n // bs if self.train_loader.drop_last else -(-n // bs)

    def batches(self, loader: DataLoader, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate one epoch of `loader` from batch `skip`, seeded by (seed, epoch); bad files raise or are skipped."""
        if isinstance(loader.sampler, EpochSampler):
            loader.sampler.set_epoch(epoch, skip * loader.batch_size)
        if loader.generator is not None:  # worker seeds
            loader.generator.manual_seed(epoch_seed(self.seed, epoch) + 1)
        for images, labels, bad in loader:
            if bad:
                if self.cfg.on_bad_image == "error":
                    raise DataError(
                        f"cannot decode image {bad[0]}; remove or replace the file, or set data.on_bad_image: skip"
                    )
                self.skipped += len(bad)
            if images is not None:
                yield images, labels
            elif self.lockstep and loader is self.train_loader:  # an empty batch: this rank still steps
                yield torch.empty((0, *self.sample_shape)), torch.empty(0, dtype=torch.long)

    def mix_line(self) -> str:
        parts = [f"{c} {p:.1%}" for c, p in zip(self.classes, self.mix)]
        shown = ", ".join(parts[:20]) + (", ..." if len(parts) > 20 else "")
        return f"expected class mix ({self.cfg.sampler.type} sampler): {shown}"


def _loader(cfg: Any, ds: Dataset, batch_size: int, sampler: Any, device: torch.device, gen: Any, train: bool):
    workers = cfg.num_workers
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda",
        persistent_workers=cfg.persistent_workers and workers > 0,
        drop_last=cfg.drop_last and train,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        collate_fn=collate,
        generator=gen,
        worker_init_fn=seed_worker,
    )


def targets_of(ds: Dataset) -> list[int]:
    return list(ds.targets)


def select(ds: Dataset, indices: list[int]) -> None:
    """Keep only `indices` of an ImageFolder or CIFAR dataset, in place."""
    if hasattr(ds, "samples"):
        ds.samples = [ds.samples[i] for i in indices]
        ds.imgs = ds.samples
        ds.targets = [t for _, t in ds.samples]
    else:
        ds.data = ds.data[indices]
        ds.targets = [ds.targets[i] for i in indices]


def subset_indices(n: int, size: int, seed: int) -> list[int]:
    """A seeded random subset of `size` of `n` samples, in dataset order."""
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].tolist())


def _cached_loader(
    cfg: Any,
    ds: Dataset,
    key: str,
    transform: Any,
    sampler_cfg: Any,
    seed: int,
    device: torch.device,
    classes: list[str],
    notes: list[str],
    train: bool,
    rank: int = 0,
    world: int = 1,
) -> Any:
    """A CachedLoader over `ds`; bad files raise or are dropped here, once."""
    from trainkit.augment import BatchAugment
    from trainkit.cache import CachedLoader, cache_dataset

    cached = cache_dataset(ds, cfg.cache, cfg.cache_dir, os.cpu_count() or 1, key)
    if cached.skipped:
        if cfg.on_bad_image == "error":
            raise DataError(
                f"cannot decode image {cached.skipped[0]}; remove or replace the file, or set data.on_bad_image: skip"
            )
        notes.append(f"{key}: skipped {len(cached.skipped)} undecodable images, e.g. {cached.skipped[0]}")
    n, size = len(cached.targets), tuple(cached.images.shape[1:])
    notes.append(f"{key}: {n} images of {size} cached ({cached.source}, {cached.seconds:.1f}s)")
    augment = BatchAugment(transform, device)
    if augment.fallbacks:
        notes.append(
            f"{key}: per-sample fallback for {', '.join(augment.fallbacks)} (no batched form); the rest runs batched"
        )
    if train:
        gen = torch.Generator()
        sampler = EpochSampler(
            build_sampler(sampler_cfg, cached.targets.tolist(), classes, gen), gen, seed, rank, world
        )
    else:
        sampler = range(rank, n, world)  # every val image on exactly one rank
    batch = cfg.batch_size if train else (cfg.val_batch_size or cfg.batch_size)
    return CachedLoader(cached, sampler, batch, cfg.drop_last and train, augment, device)


def build_data(
    cfg: Any,
    seed: int,
    device: torch.device,
    classes: list[str] | None = None,
    train: bool = True,
    rank: int = 0,
    world: int = 1,
) -> Data:
    """Datasets and loaders of a `DataConfig`. With train=False only val is built (for eval).

    Under DDP (`world` > 1) each rank gets its shard of the training order and every val image exactly once.
    """
    tcalls = train_calls(cfg)
    train_set = train_loader = None
    mix: list[float] = []
    notes: list[str] = []
    if train:
        raw = open_dataset(cfg, "train", build_transform(tcalls), classes)
        if cfg.subset is not None and cfg.subset < len(raw):
            select(raw, subset_indices(len(raw), cfg.subset, seed))
        train_set = SeededSamples(raw)
        classes = list(train_set.classes)
        targets = targets_of(train_set)
        mix = expected_mix(cfg.sampler, targets, classes)
        if cfg.cache != "none":
            train_loader = _cached_loader(
                cfg, raw, "data.train", raw.transform, cfg.sampler, seed, device, classes, notes, True, rank, world
            )
        else:
            order_gen = torch.Generator()
            sampler = EpochSampler(
                build_sampler(cfg.sampler, targets, classes, order_gen), order_gen, seed, rank, world
            )
            train_loader = _loader(cfg, train_set, cfg.batch_size, sampler, device, torch.Generator(), True)
    val_set = open_dataset(cfg, "val", build_transform(val_calls(cfg)), classes)
    classes = list(val_set.classes) if classes is None else classes
    if cfg.cache != "none":
        val_loader = _cached_loader(
            cfg, val_set, "data.val", val_set.transform, None, seed, device, classes, notes, False, rank, world
        )
    else:
        val_order = range(rank, len(val_set), world)  # every val image on exactly one rank, none padded
        val_loader = _loader(cfg, val_set, cfg.val_batch_size or cfg.batch_size, val_order, device, None, False)
    return Data(
        cfg, seed, classes, train_set, val_set, train_loader, val_loader, tcalls, mix, notes=notes, lockstep=world > 1
    )


def first_sample_shape(ds: Dataset, key: str) -> tuple[int, ...]:
    """Shape of the first decodable sample after its transforms; checks it is a tensor."""
    for i in range(min(len(ds), 16)):
        x, _ = ds[i]
        if isinstance(x, BadSample):
            continue
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{key}: the transforms return {type(x).__name__}, not a tensor; end them with ToTensor")
        return tuple(x.shape)
    raise DataError(f"{key}: none of the first images could be decoded; check the data folder")


def sample_grid(data: Data, count: int = 64) -> torch.Tensor:
    """A grid of augmented, un-normalized training images (the caller's RNG is left as it was)."""
    from torchvision.utils import make_grid

    ds = data.train_set
    gen = torch.Generator().manual_seed(data.seed)
    idx = torch.randperm(len(ds), generator=gen)[: min(count, len(ds))].tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(data.seed)
        images = [x for x, _ in (ds[i] for i in idx) if isinstance(x, torch.Tensor)]
    if not images:
        raise DataError("data.train: none of the sampled images could be decoded")
    return make_grid(unnormalize(torch.stack(images), data.train_calls).clamp(0, 1), nrow=int(math.sqrt(len(images))))
