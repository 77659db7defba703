"""Samplers: random, sequential or weighted by class, and the epoch order that makes resume and DDP exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler

from trainkit.data.images import ImageDataset
from trainkit.data.schema import SamplerConfig
from trainkit.errors import ConfigError
from trainkit.text import suggest


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of `n` samples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def val_order(n: int, rank: int = 0, world: int = 1) -> range:
    """Every val image on exactly one rank, none padded."""
    return range(rank, n, world)


def train_order(
    cfg: SamplerConfig, targets: list[int], classes: list[str], seed: int, rank: int = 0, world: int = 1
) -> EpochSampler:
    """The training order of the configured sampler, seeded per epoch and sharded over ranks."""
    gen = torch.Generator()
    return EpochSampler(build_sampler(cfg, targets, classes, gen), gen, seed, rank, world)


ORDER, WORKERS, MIXING = 0, 1, 2**32  # where each stream's positions start: an epoch's order, its workers, batches


def derive_seed(seed: int, epoch: int, position: int = ORDER) -> int:
    """The seed of (run seed, epoch, position): the one formula for every stream of randomness, so that an
    epoch's order, its workers' seeds and each batch's mixing do not depend on what ran before them (a resumed
    run draws the same). `position` is a stream's start plus a place in it (MIXING + batch index)."""
    return (seed * 1_000_003 + epoch * 7_919 + position) % 2**63


def class_weights(cfg: SamplerConfig, classes: list[str]) -> list[float]:
    """Per-class weights of a weighted sampler: balanced, or by name (unnamed classes: 1.0)."""
    if cfg.class_weights == "balanced":
        return [1.0] * len(classes)  # scaled by 1/count in sample_weights
    for name in cfg.class_weights:
        if name not in classes:
            raise ConfigError(
                f"data.sampler.class_weights.{name}: no class named {name!r}{suggest(name, classes)} "
                f"(classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
            )
    return [float(cfg.class_weights.get(c, 1.0)) for c in classes]


def expected_mix(cfg: SamplerConfig, targets: list[int], classes: list[str]) -> list[float]:
    """The fraction of draws each class is expected to get from the sampler."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes)).astype(float)
    if cfg.type != "weighted":
        return list(counts / counts.sum())
    mass = counts * np.asarray(sample_class_weights(cfg, targets, classes))
    if mass.sum() <= 0:
        raise ConfigError("data.sampler.class_weights: every weight is 0; give at least one class a weight > 0")
    return list(mass / mass.sum())


def sample_class_weights(cfg: SamplerConfig, targets: list[int], classes: list[str]) -> list[float]:
    weights = class_weights(cfg, classes)
    if cfg.class_weights == "balanced":
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
        weights = [1.0 / n if n else 0.0 for n in counts]
    return weights


def build_sampler(cfg: SamplerConfig, targets: list[int], classes: list[str], generator: torch.Generator) -> Any:
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
    weights = [float(per_class[t]) for t in targets]
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

    def __init__(self, base: Any, gen: torch.Generator, seed: int, rank: int = 0, world: int = 1) -> None:
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
        self.gen.manual_seed(derive_seed(self.seed, self.epoch))
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

    def __init__(self, ds: ImageDataset) -> None:
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
