"""Datasets by name, transforms from specs, samplers and loaders.

Transforms use torchvision.transforms.v2; `ToTensor` is v2's recommended
equivalent of v1's (ToImage + ToDtype(float32, scale=True)).

A file that cannot be decoded never raises inside a worker: the dataset
returns a `BadSample` marker and the collate function moves it to a side list,
so the main process can name the file (`on_bad_image: error`) or count it
(`on_bad_image: skip`) across all workers.
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
from PIL import Image
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
    default_collate,
)
from torchvision import datasets
from torchvision.transforms import v2

from trainkit import specs
from trainkit.errors import ConfigError, DataError

IMG_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


# --------------------------------------------------------------------------- images


@dataclass
class BadSample:
    path: str
    reason: str


def load_rgb(path: str) -> Image.Image:
    """Decode any PIL-readable image to RGB (grayscale, palette, RGBA, CMYK included)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # palette transparency must go through RGBA
        return img.convert("RGB")


class ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder that ignores hidden folders and files and reports bad images."""

    def __init__(self, root: str, transform: Any, key: str) -> None:
        if not os.path.isdir(root):
            raise DataError(
                f"{key}: folder {root} does not exist; point {key} at a folder with one sub-folder per class"
            )
        self.key = key
        super().__init__(root, transform=transform, is_valid_file=_is_image_file, allow_empty=True)
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        empty = [os.path.join(root, c) for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            raise DataError(
                f"{key}: class folder {empty[0]} has no image files ({', '.join(IMG_EXTENSIONS[:4])}, ...); "
                "add images or remove the folder"
            )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise DataError(
                f"{self.key}: no class folders in {directory}; put each class's images in its own sub-folder"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            img = load_rgb(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return BadSample(path, str(exc) or type(exc).__name__), target
        return (self.transform(img) if self.transform else img), target


def _is_image_file(path: str) -> bool:
    return not os.path.basename(path).startswith(".") and path.lower().endswith(IMG_EXTENSIONS)


def _no_md5(base: type) -> type:
    """torchvision's CIFAR class with existence checks instead of md5 checks.

    The loading code is torchvision's own; skipping md5 avoids re-hashing
    170 MB at each start and accepts re-packed archives in the same format.
    """
    return type(
        base.__name__,
        (base,),
        {
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
            "__module__": __name__,
        },
    )


CIFAR10 = _no_md5(datasets.CIFAR10)
CIFAR100 = _no_md5(datasets.CIFAR100)
_CIFAR = {
    "cifar10": (CIFAR10, "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": (CIFAR100, "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


def open_dataset(cfg: Any, split: str, transform: Any, classes: list[str] | None = None) -> Dataset:
    """The `split` ('train' or 'val') dataset; `classes` (from train or a checkpoint) must match."""
    if cfg.dataset == "imagefolder":
        key = f"data.{split}"
        ds = ImageFolder(getattr(cfg, split), transform, key)
    else:
        cls, folder, url = _CIFAR[cfg.dataset]
        try:
            ds = cls(cfg.root, train=split == "train", transform=transform, download=cfg.download)
        except RuntimeError:
            raise DataError(
                f"data.root: no {cfg.dataset} files in {os.path.join(cfg.root, folder)}; "
                f"extract {url} into {cfg.root}, or set data.download: true"
            ) from None
    if classes is not None and list(ds.classes) != list(classes):
        missing = [c for c in classes if c not in ds.classes]
        extra = [c for c in ds.classes if c not in classes]
        detail = f"missing {missing}, extra {extra}" if missing or extra else "same names in another order"
        raise DataError(f"data.{split}: its classes differ from the training classes: {detail}")
    return ds


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


# --------------------------------------------------------------------------- samplers


def class_weights(cfg: Any, classes: list[str]) -> list[float]:
    """Per-class weights of a weighted sampler: balanced, or by name (unnamed classes: 1.0)."""
    if cfg.class_weights == "balanced":
        return [1.0] * len(classes)  # scaled by 1/count in sample_weights
    for name in cfg.class_weights:
        if name not in classes:
            raise ConfigError(
                f"data.sampler.class_weights.{name}: no class named {name!r}{specs.suggest(name, classes)} "
                f"(classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
            )
    return [float(cfg.class_weights.get(c, 1.0)) for c in classes]


def expected_mix(cfg: Any, targets: list[int], classes: list[str]) -> list[float]:
    """The fraction of draws each class is expected to get from the sampler."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes)).astype(float)
    if cfg.type != "weighted":
        return list(counts / counts.sum())
    mass = counts * np.asarray(sample_class_weights(cfg, targets, classes))
    if mass.sum() <= 0:
        raise ConfigError("data.sampler.class_weights: every weight is 0; give at least one class a weight > 0")
    return list(mass / mass.sum())


def sample_class_weights(cfg: Any, targets: list[int], classes: list[str]) -> list[float]:
    weights = class_weights(cfg, classes)
    if cfg.class_weights == "balanced":
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
        weights = [1.0 / n if n else 0.0 for n in counts]
    return weights


def build_sampler(cfg: Any, targets: list[int], classes: list[str], generator: torch.Generator) -> Any:
    n = len(targets)
    if cfg.type == "sequential":
        return SequentialSampler(range(n))
    if cfg.type == "random":
        return RandomSampler(range(n), generator=generator)
    per_class = sample_class_weights(cfg, targets, classes)
    expected_mix(cfg, targets, classes)  # refuses all-zero weights
    num = cfg.num_samples or n
    if not cfg.replacement and num > n:
        raise ConfigError(f"data.sampler.num_samples: {num} draws without replacement exceed the {n} samples")
    weights = torch.tensor([per_class[t] for t in targets], dtype=torch.double)
    return WeightedRandomSampler(weights, num, replacement=cfg.replacement, generator=generator)


class EpochSampler(Sampler):
    """One epoch's training order as (index, augmentation seed) pairs: a pure function of (seed, epoch).

    `base` is the configured torch sampler, drawing from the generator `gen`, which is reseeded at the start
    of every epoch. Each position also gets its own augmentation seed, so a sample's augmentation depends
    neither on which worker loads it nor on what ran before, and an epoch can resume at any batch (`skip`).

    Under DDP the one global order is sharded as torch's DistributedSampler does: padded to a multiple of
    the world size, rank r takes positions r, r + W, r + 2W, ... So W processes with batch B see, step by
    step, the same global batches as one process with batch W * B, augmented the same way.
    """

    def __init__(self, base: Sampler, gen: torch.Generator, seed: int, rank: int = 0, world: int = 1) -> None:
        self.base, self.gen, self.seed = base, gen, seed
        self.rank, self.world = rank, world
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    @property
    def total(self) -> int:
        """Positions this rank gets in a whole epoch."""
        return -(-len(self.base) // self.world)

    def __len__(self) -> int:
        return self.total - self.skip

    def global_order(self) -> tuple[list[int], list[int]]:
        self.gen.manual_seed(epoch_seed(self.seed, self.epoch))
        order = [int(i) for i in self.base]
        seeds = torch.randint(0, 2**62, (len(order),), generator=self.gen).tolist()
        pad = self.total * self.world - len(order)
        return order + order[:pad], seeds + seeds[:pad]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self.global_order()
        for pos in range(self.rank + self.skip * self.world, len(order), self.world):
            yield order[pos], seeds[pos]


class SeededSamples(Dataset):
    """A dataset whose item `(index, seed)` is transformed under its own seed, leaving the caller's RNG as it was."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getattr__(self, name: str) -> Any:  # classes, targets, samples, ...
        if name == "ds":
            raise AttributeError(name)
        return getattr(self.ds, name)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.ds[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.ds[index]


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


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (seed, epoch), so an epoch's order does not depend on what ran before it."""
    return (seed * 1_000_003 + epoch * 7_919) % 2**63


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
    return Data(cfg, seed, classes, train_set, val_set, train_loader, val_loader, tcalls, mix, notes=notes)


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
