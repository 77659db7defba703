"""The data side of a run: transforms from specs, and `build_data`, which opens the datasets and their loaders.

Transforms use torchvision.transforms.v2; `ToTensor` is v2's recommended
equivalent of v1's (ToImage + ToDtype(float32, scale=True)). Datasets live in
`images`, samplers in `samplers`, the two loaders in `loaders` and `cache`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.transforms import v2

from trainkit.config import specs
from trainkit.data.filecheck import find_bad_files
from trainkit.data.images import BadSample, ImageDataset
from trainkit.data.loaders import BadImages, Loader, SampleLoader, bad_image_message
from trainkit.data.samplers import EpochSampler, SeededSamples, expected_mix, train_order, val_order
from trainkit.data.schema import DataConfig
from trainkit.data.sets import open_sets
from trainkit.data.split import SPLIT_FILE
from trainkit.data.transforms import build_transform, train_calls, unnormalize, val_calls
from trainkit.errors import ConfigError, DataError
from trainkit.text import plural, some

# --------------------------------------------------------------------------- the data of a run


@dataclass
class Data:
    """Everything the run needs from the data side: classes, datasets and their two loaders."""

    cfg: DataConfig
    seed: int
    classes: list[str]
    train_set: SeededSamples | None
    val_set: ImageDataset
    train_loader: Loader | None
    val_loader: Loader
    train_calls: list[specs.Call]
    bad: BadImages
    class_mix: list[float] = field(default_factory=list)  # the expected fraction of each class per epoch
    notes: list[str] = field(default_factory=list)  # said once at start (cache, per-sample fallbacks)
    split: dict[str, Any] | None = None  # data.val_split: what split.json records

    def run_files(self) -> dict[str, str]:
        """The files of the data side that the run directory keeps: split.json, with data.val_split."""
        return {SPLIT_FILE: json.dumps(self.split, indent=1) + "\n"} if self.split else {}

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole training epoch."""
        assert self.train_loader is not None, "built with train=False"
        return self.train_loader.steps_per_epoch

    @property
    def skipped(self) -> int:
        """Files that failed to decode, skipped since they were last taken (`data.on_bad_image: skip`)."""
        return len(self.bad.skipped)

    @functools.cached_property
    def sample_shape(self) -> tuple[int, ...]:
        """One training sample's shape after data.transforms.train."""
        assert self.train_set is not None, "built with train=False"
        with torch.random.fork_rng(devices=[]):  # a random transform must not move the run's RNG
            return first_sample_shape(self.train_set, "data.transforms.train")

    @functools.cached_property
    def input_shape(self) -> tuple[int, ...]:
        """One val sample's shape after data.transforms.val: what the model sees when evaluated."""
        return first_sample_shape(self.val_set, "data.transforms.val")

    def train_through_val_transforms(self) -> ImageDataset:
        """The training images through the val transforms: the data as it is, without augmentation."""
        assert self.train_set is not None, "built with train=False"
        ds = copy.copy(self.train_set.ds)
        ds.transform = build_transform(val_calls(self.cfg))
        return ds

    def mix_line(self) -> str:
        parts = [f"{c} {p:.1%}" for c, p in zip(self.classes, self.class_mix)]
        shown = ", ".join(parts[:20]) + (", ..." if len(parts) > 20 else "")
        return f"expected class mix ({self.cfg.sampler.type} sampler): {shown}"


def targets_of(ds: ImageDataset | SeededSamples) -> list[int]:
    return list(ds.targets)


def subset_indices(n: int, size: int, seed: int) -> list[int]:
    """A seeded random subset of `size` of `n` samples, in dataset order."""
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].tolist())


def split_prepared(transform: v2.Compose) -> tuple[v2.Compose | None, v2.Compose]:
    """The val transforms' leading Resize and CenterCrop (deterministic, ending in one size), and the rest.

    Stored once as they come out of the per-sample path (PIL's resize of the full-resolution decode), the
    cached val images are the pixels `predict`, `export` and an uncached `eval` see, not a resize of the
    smaller training copy: every path scores the same, image by image."""
    from trainkit.data.augment import flatten

    ops = flatten(transform)
    lead = 0
    while lead < len(ops) and isinstance(ops[lead], (v2.Resize, v2.CenterCrop)):
        lead += 1
    while lead and not isinstance(ops[lead - 1], v2.CenterCrop):  # one size only after a CenterCrop
        lead -= 1
    if not lead:
        return None, transform
    return v2.Compose(ops[:lead]), v2.Compose(ops[lead:])


def _cached_loader(
    cfg: DataConfig,
    ds: ImageDataset,
    key: str,
    order: Callable[[list[int]], EpochSampler | range],
    device: torch.device,
    notes: list[str],
    train: bool,
) -> Loader:
    """A CachedLoader over `ds`; bad files raise or are dropped here, once."""
    from trainkit.data.augment import BatchAugment
    from trainkit.data.cache import CachedLoader, cache_dataset

    transform, prepare = ds.transform, None
    if cfg.cache_size and not train:  # photos of many sizes: the val crops from the originals, as per sample
        prepare, transform = split_prepared(ds.transform)
    cached = cache_dataset(ds, cfg.cache, cfg.cache_dir, os.cpu_count() or 1, key, cfg.cache_size, prepare)
    if cached.skipped:
        if cfg.on_bad_image == "error":
            raise DataError(bad_image_message(cached.skipped[0]))
        notes.append(f"{key}: skipped {plural(len(cached.skipped), 'undecodable image')}, e.g. {cached.skipped[0]}")
    notes.append(f"{key}: {cached.describe()} cached ({cached.source}, {cached.seconds:.1f}s)")
    augment = BatchAugment(transform, device)
    if augment.fallbacks:
        notes.append(
            f"{key}: per-sample fallback for {', '.join(augment.fallbacks)} (no batched form); the rest runs batched"
        )
    batch = cfg.batch_size if train else cfg.eval_batch_size
    return CachedLoader(cached, order(cached.targets.tolist()), batch, cfg.drop_last and train, augment, device)


def _files_notes(ds: ImageDataset, key: str, cfg: DataConfig, notes: list[str]) -> None:
    """Say the files ImageFolder passes over, and find the files that cannot be images before any step:
    refused (`on_bad_image: error`) or left out and named once (`skip`)."""
    notes += list(getattr(ds, "notes", []))
    ignored = getattr(ds, "ignored", [])
    if ignored:
        what = "file that is not an image" if len(ignored) == 1 else "files that are not images"
        notes.append(f"{key}: ignored {len(ignored)} {what}: {some(ignored)}")
    files = ds.files()
    if files is None:  # decoded arrays (CIFAR, MNIST)
        return
    bad = find_bad_files(files)
    if not bad:
        return
    named = some([f"{p} ({why})" for p, why in bad])
    if cfg.on_bad_image == "error":
        what = "1 file is not a readable image" if len(bad) == 1 else f"{len(bad)} files are not readable images"
        raise DataError(f"{key}: {what}: {named}; remove or replace them, or set data.on_bad_image: skip")
    dropped = {p for p, _ in bad}
    ds.keep([i for i, p in enumerate(files) if p not in dropped])
    what = "1 file that is not a readable image" if len(bad) == 1 else f"{len(bad)} files that are not readable images"
    notes.append(f"{key}: skipping {what}: {named}")


def build_data(
    cfg: DataConfig,
    seed: int,
    device: torch.device,
    classes: list[str] | None = None,
    train: bool = True,
    rank: int = 0,
    world: int = 1,
    val_limit: int | None = None,
    stored_split: tuple[dict[str, Any], str] | None = None,
    val_from: str = "val",
) -> Data:
    """Datasets and loaders of a `DataConfig`. With train=False only val is built (for eval). `val_limit`: a
    seeded sample of that many val images, across the classes (--fast-dev-run's few batches). `stored_split`:
    the split.json of a run (and its path) whose `data.val_split` is to be taken as recorded. `val_from`
    "test" (with train=False): the test set in val's place.

    Under DDP (`world` > 1) each rank gets its shard of the training order and every val image exactly once.
    """
    tcalls = train_calls(cfg)
    bad = BadImages(cfg.on_bad_image)
    train_set: SeededSamples | None = None
    train_loader: Loader | None = None
    mix: list[float] = []
    notes: list[str] = []
    raw, val_set, plan = open_sets(cfg, tcalls, train, classes, stored_split, notes, val_from)
    if raw is not None:
        if cfg.subset is not None and cfg.subset < len(raw):
            raw.keep(subset_indices(len(raw), cfg.subset, seed))
        _files_notes(raw, "data.train", cfg, notes)
        train_set = SeededSamples(raw)
        classes = list(train_set.classes)
        mix = expected_mix(cfg.sampler, targets_of(train_set), classes)
        known = classes
        shape = functools.partial(first_sample_shape, train_set, "data.transforms.train")
        split = Split(
            raw, train_set, "data.train", lambda targets: train_order(cfg.sampler, targets, known, seed, rank, world)
        )
        train_loader = _loader(cfg, split, device, notes, bad, seed, shape if world > 1 else None)
    if val_limit is not None and val_limit < len(val_set):
        val_set.keep(subset_indices(len(val_set), val_limit, seed))
    _files_notes(val_set, f"data.{val_from}", cfg, notes)
    classes = list(val_set.classes) if classes is None else classes
    val_split = Split(val_set, val_set, "data.val", lambda targets: val_order(len(targets), rank, world), train=False)
    return Data(
        cfg=cfg,
        seed=seed,
        classes=classes,
        train_set=train_set,
        val_set=val_set,
        train_loader=train_loader,
        val_loader=_loader(cfg, val_split, device, notes, bad, seed),
        train_calls=tcalls,
        bad=bad,
        class_mix=mix,
        notes=notes,
        split=plan.record if plan is not None else None,
    )


@dataclass(frozen=True)
class Split:
    """One split as its loader is made from it: the dataset (`raw`), what is sampled (`samples`: the training
    set behind its seeded transforms, or the val set itself), its key in messages, and its order."""

    raw: ImageDataset
    samples: ImageDataset | SeededSamples
    key: str
    order: Callable[[list[int]], EpochSampler | range]
    train: bool = True


def _loader(
    cfg: DataConfig,
    split: Split,
    device: torch.device,
    notes: list[str],
    bad: BadImages,
    seed: int,
    empty_shape: Callable[[], tuple[int, ...]] | None = None,
) -> Loader:
    """The split's loader: cached (decoded once, augmented in batches on the device) or per sample."""
    if cfg.cache != "none":
        return _cached_loader(cfg, split.raw, split.key, split.order, device, notes, split.train)
    return SampleLoader(
        split.samples,
        split.order(targets_of(split.samples)),
        cfg.batch_size if split.train else cfg.eval_batch_size,
        cfg,
        device,
        seed,
        bad,
        drop_last=cfg.drop_last and split.train,
        empty_shape=empty_shape,
    )


def first_sample_shape(ds: ImageDataset | SeededSamples, key: str) -> tuple[int, ...]:
    """Shape of the first decodable sample after its transforms; checks it is a tensor."""
    for i in range(min(len(ds), 16)):
        x, _ = ds[i]
        if isinstance(x, BadSample):
            continue
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{key}: the transforms return {type(x).__name__}, not a tensor; end them with ToTensor")
        return tuple(x.shape)
    raise DataError(f"{key}: none of the first images could be decoded; check the data folder")


FIX_SIZES = {
    "data.transforms.train": "add RandomResizedCrop: {size: 224} to data.transforms.train",
    "data.transforms.val": "add Resize: {size: 256} and CenterCrop: {size: 224} to data.transforms.val",
}


def check_one_size(ds: ImageDataset | SeededSamples, key: str, count: int = 6) -> None:
    """A batch stacks its samples: a few samples, spread over the set, must come out of the transforms in one
    size. Refused here in one line, before training, rather than as torch.stack's error in the first batch."""
    step = max(1, len(ds) // count)
    sizes: dict[tuple[int, ...], int] = {}
    with torch.random.fork_rng(devices=[]):  # a random transform must not move the run's RNG
        for i in range(0, min(len(ds), step * count), step):
            x, _ = ds[i]
            if isinstance(x, torch.Tensor):
                sizes.setdefault(tuple(x.shape), i)
    if len(sizes) > 1:
        (a, i), (b, j) = list(sizes.items())[:2]
        raise ConfigError(
            f"{key}: the images come out of the transforms in different sizes ({list(a)} for image {i}, {list(b)} "
            f"for image {j}), and a batch needs one size; {FIX_SIZES[key]}, or set data.cache_size"
        )


def sample_grid(data: Data, count: int = 64) -> torch.Tensor:
    """A grid of augmented, un-normalized training images (the caller's RNG is left as it was)."""
    from torchvision.utils import make_grid

    ds = data.train_set
    assert ds is not None, "built with train=False"
    gen = torch.Generator().manual_seed(data.seed)
    idx = torch.randperm(len(ds), generator=gen)[: min(count, len(ds))].tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(data.seed)
        images = [x for x, _ in (ds[i] for i in idx) if isinstance(x, torch.Tensor)]
    if not images:
        raise DataError("data.train: none of the sampled images could be decoded")
    return make_grid(unnormalize(torch.stack(images), data.train_calls).clamp(0, 1), nrow=int(math.sqrt(len(images))))
