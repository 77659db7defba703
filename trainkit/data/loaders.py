"""One loader interface over the per-sample and cached data paths.

A loader yields `(x, y)` batches of one epoch with the `data.on_bad_image` policy already applied,
and offers `steps_per_epoch` and `set_epoch(epoch, skip)`: the epoch's order (and each sample's
augmentation seed) is a pure function of (seed, epoch), so an epoch can start again at any batch.
`SampleLoader` (here) decodes and transforms each sample in DataLoader workers; `CachedLoader`
(`cache`) serves whole batches from decoded uint8 images.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from trainkit.data.images import BadSample
from trainkit.data.samplers import WORKERS, EpochSampler, derive_seed, num_batches
from trainkit.data.schema import DataConfig
from trainkit.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


class Loader(Protocol):
    """What the loop needs of a loader."""

    @property
    def steps_per_epoch(self) -> int: ...

    def set_epoch(self, epoch: int, skip: int = 0) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


def epoch_batches(loader: Loader, epoch: int, skip: int = 0) -> Iterator[Batch]:
    """The batches of epoch `epoch` from batch `skip`."""
    loader.set_epoch(epoch, skip)
    return iter(loader)


def bad_image_message(detail: str, skip: str = "set data.on_bad_image: skip") -> str:
    return f"cannot decode image {detail}; remove or replace the file, or {skip}"


class BadImages:
    """`data.on_bad_image` for files that fail to decode while training (the check at start found the rest):
    raise on the first one (`error`), or keep their names (`skip`)."""

    def __init__(self, mode: str, skip: str = "set data.on_bad_image: skip") -> None:
        self.mode, self.skip = mode, skip
        self.skipped: list[str] = []  # "path (reason)" since the last `take`
        self.named: set[str] = set()  # said once already

    def found(self, bad: Sequence[str]) -> None:
        if not bad:
            return
        if self.mode == "error":
            raise DataError(bad_image_message(bad[0], self.skip))
        self.skipped += bad

    def take(self) -> tuple[int, list[str]]:
        """How many files were skipped since the last take, and those of them not named before."""
        new = [b for b in dict.fromkeys(self.skipped) if b not in self.named]
        self.named.update(new)
        count, self.skipped = len(self.skipped), []
        return count, new


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


class EpochBatches:
    """What both loaders share: an epoch's order, an `EpochSampler` (training) or a fixed range of indices
    (evaluation), cut into batches."""

    def __init__(self, order: EpochSampler | range, batch_size: int, drop_last: bool) -> None:
        self.order, self.batch_size, self.drop_last = order, batch_size, drop_last

    @property
    def steps_per_epoch(self) -> int:
        n = self.order.total if isinstance(self.order, EpochSampler) else len(self.order)
        return num_batches(n, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if isinstance(self.order, EpochSampler):
            self.order.set_epoch(epoch, skip * self.batch_size)


class SampleLoader(EpochBatches):
    """Per-sample decoding and transforms in DataLoader workers, over an `EpochSampler` (training) or a
    fixed order of indices (evaluation). `empty_shape`, when given, makes a batch with no good image an
    empty batch of that sample shape (`empty_shape()`) instead of no batch: under DDP every rank must
    take every step."""

    def __init__(
        self,
        dataset: Any,  # a map-style dataset of (image, label): ImageDataset or SeededSamples
        order: EpochSampler | range,
        batch_size: int,
        cfg: DataConfig,
        device: torch.device,
        seed: int,
        bad: BadImages,
        drop_last: bool = False,
        empty_shape: Callable[[], tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__(order, batch_size, drop_last)
        self.seed, self.bad, self.empty_shape = seed, bad, empty_shape
        self.generator = torch.Generator() if isinstance(order, EpochSampler) else None  # worker seeds
        workers = cfg.num_workers
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=order,
            num_workers=workers,
            pin_memory=cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda",
            persistent_workers=cfg.persistent_workers and workers > 0,
            drop_last=drop_last,
            prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
            collate_fn=collate,
            generator=self.generator,
            worker_init_fn=seed_worker,
        )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch, skip)
        if self.generator is not None:
            self.generator.manual_seed(derive_seed(self.seed, epoch, WORKERS))

    def __iter__(self) -> Iterator[Batch]:
        for images, labels, bad in self.loader:
            self.bad.found(bad)
            if images is not None:
                yield images, labels
            elif self.empty_shape is not None:
                yield torch.empty((0, *self.empty_shape())), torch.empty(0, dtype=torch.long)
