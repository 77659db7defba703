"""The fast data path: decode every image once into one uint8 tensor, then serve whole batches.

`data.cache: memory` decodes the dataset in parallel threads (PIL releases the
GIL while it decodes) into a (N, C, H, W) uint8 tensor. `data.cache: disk`
also keeps it as a `.npy` file, memory-mapped on the next run, under a name
that hashes the file list with sizes and mtimes: a changed dataset gets a new
cache, never a stale one. `CachedLoader` then yields batches augmented as
whole tensors on the training device (`augment.BatchAugment`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.augment import BatchAugment
from trainkit.errors import DataError
from trainkit.images import decode_failure, load_rgb
from trainkit.loaders import EpochBatches
from trainkit.samplers import EpochSampler, num_batches

VERSION = 1


@dataclass
class Cached:
    images: torch.Tensor  # uint8 (N, C, H, W)
    targets: torch.Tensor  # int64 (N,)
    seconds: float  # the one-time cost: decoding, or opening the disk cache
    source: str  # "memory" (decoded now), "disk" (decoded now and saved), "disk hit", "arrays"
    skipped: list[str]


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainkit"


def _key(samples: list[tuple[str, int]]) -> str:
    h = hashlib.sha256(f"trainkit-cache-{VERSION}".encode())
    for path, target in samples:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode())
    return h.hexdigest()[:32]


def _decode(samples: list[tuple[str, int]], workers: int, key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    def one(item: tuple[str, int]) -> np.ndarray | str:
        try:
            return np.asarray(load_rgb(item[0]))
        except Exception as exc:  # any decoder failure is a bad file, named below
            return f"{item[0]} ({decode_failure(exc)})"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(one, samples, chunksize=256))
    bad = [d for d in decoded if isinstance(d, str)]
    good = [(d, t) for d, (_, t) in zip(decoded, samples) if not isinstance(d, str)]
    if not good:
        raise DataError(f"{key}: no image could be decoded")
    shapes = {d.shape for d, _ in good}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise DataError(
            f"{key}: data.cache needs images of one size, found {a[1]}x{a[0]} and {b[1]}x{b[0]}; "
            "resize the files, or set data.cache: none"
        )
    images = np.stack([d for d, _ in good]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), np.asarray([t for _, t in good], dtype=np.int64), bad


def cache_dataset(ds: Any, mode: str, cache_dir: str | None, workers: int, key: str) -> Cached:
    """The decoded images of `ds` (an ImageFolder or a CIFAR dataset)."""
    start = time.perf_counter()
    if hasattr(ds, "data") and isinstance(ds.data, np.ndarray):  # CIFAR: already decoded arrays (N, H, W, C)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return Cached(images, torch.as_tensor(ds.targets, dtype=torch.int64), time.perf_counter() - start, "arrays", [])
    samples = list(ds.samples)
    if mode == "disk":
        folder = Path(cache_dir) if cache_dir else default_dir()
        path = folder / f"{_key(samples)}.npy"
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            info = json.loads(meta.read_text())
            images = np.load(path, mmap_mode="c")  # copy-on-write: never written back
            return Cached(
                torch.from_numpy(images),
                torch.as_tensor(info["targets"]),
                time.perf_counter() - start,
                "disk hit",
                info["skipped"],
            )
    decoded, targets, bad = _decode(samples, workers, key)
    if mode == "disk":
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, decoded)
        os.replace(tmp, path)
        meta.write_text(json.dumps({"targets": targets.tolist(), "skipped": bad, "shape": list(decoded.shape)}))
    return Cached(torch.from_numpy(decoded), torch.from_numpy(targets), time.perf_counter() - start, mode, bad)


class CachedLoader(EpochBatches):
    """Batches of cached images, augmented as whole batches on the training device (a `loaders.Loader`).

    `order` is an `EpochSampler` (training: a seeded order, one augmentation seed per batch) or a fixed
    range of indices (evaluation). Bad files were dropped (or refused) when the cache was built.
    """

    def __init__(
        self,
        cached: Cached,
        order: EpochSampler | range,
        batch_size: int,
        drop_last: bool,
        augment: BatchAugment,
        device: torch.device,
    ) -> None:
        on_device = device.type != "cpu" and cached.images.numel() < 4 * 2**30
        self.images = cached.images.to(device) if on_device else cached.images
        self.targets = cached.targets.to(self.images.device)
        super().__init__(order, batch_size, drop_last)
        self.augment, self.device = augment, device
        self.gen = torch.Generator(device=self.images.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        store = self.images.device
        if isinstance(self.order, EpochSampler):
            pairs = list(self.order)
            order = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
            seeds: list[int] | None = [s for _, s in pairs]
        else:  # evaluation: a fixed order, no augmentation seeds
            order, seeds = torch.tensor(self.order, dtype=torch.int64), None
        order = order.to(store)  # one transfer per epoch: no host-device copy, so no sync, per batch
        bs = self.batch_size
        for b in range(num_batches(len(order), bs, self.drop_last)):
            idx = order[b * bs : (b + 1) * bs]
            x, y = self.images[idx], self.targets[idx]
            if store.type != self.device.type:  # the cache stayed in host memory
                if self.device.type == "cuda":
                    x, y = x.pin_memory().to(self.device, non_blocking=True), y.to(self.device)
                else:
                    x, y = x.to(self.device), y.to(self.device)
            self.gen.manual_seed(seeds[b * bs] if seeds else 0)  # each batch's augmentation has its own seed
            yield self.augment(x, self.gen), y
