"""The fast data path: decode every image once into one uint8 tensor, then serve whole batches.

`data.cache: memory` decodes the dataset in parallel threads (PIL releases the
GIL while it decodes) into a (N, C, H, W) uint8 tensor. `data.cache: disk`
also keeps it as a `.npy` file, memory-mapped on the next run, under a name
that hashes the file list with sizes and mtimes: a changed dataset gets a new
cache, never a stale one. `CachedLoader` then yields batches augmented as
whole tensors on the training device (`augment.BatchAugment`).

Photos of many sizes (`data.cache_size: S`) are stored once at a bounded resolution, as FFCV does: each is
decoded (JPEGs with PIL's draft mode, which decodes at 1/2, 1/4 or 1/8 scale directly) and resized so that its
shorter side is at most S, aspect kept. They are stored ragged: one flat uint8 tensor of every image's pixels
back to back, with each image's (H, W) and offset, so no byte is padding. Pixels are kept as decoded, (H, W, C):
a (C, H, W) view of them is channels_last, the layout in which torch's uint8 antialiased resize is fastest on
the CPU (1.8x the planar layout) and the one a convolutional model wants. A batch is then a list of (C, H, W)
views that the first geometric transform (RandomResizedCrop, or Resize and CenterCrop) turns into one tensor.
"""

from __future__ import annotations

import hashlib
import itertools
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

from trainkit.data.augment import BatchAugment
from trainkit.data.images import ImageDataset, decode_failure, load_rgb
from trainkit.data.loaders import EpochBatches
from trainkit.data.samplers import EpochSampler, num_batches
from trainkit.errors import DataError
from trainkit.store.files import write_atomic, write_text_atomic

VERSION = 1


@dataclass
class Cached:
    images: torch.Tensor  # uint8 (N, C, H, W); for a ragged store (cache_size), every image's (H, W, C), flat
    targets: torch.Tensor  # int64 (N,)
    seconds: float  # the one-time cost: decoding, or opening the disk cache
    source: str  # "memory" (decoded now), "disk" (decoded now and saved), "disk hit", "arrays"
    skipped: list[str]
    shapes: torch.Tensor | None = None  # ragged: int64 (N, 2), each image's H and W (C is 3)
    offsets: torch.Tensor | None = None  # ragged: int64 (N,), where each image starts in `images`

    def describe(self) -> str:
        if self.shapes is None:
            return f"{len(self.targets)} images of {tuple(self.images.shape[1:])}"
        short = self.shapes.min(dim=1).values
        return (
            f"{len(self.targets)} images of many sizes (shorter side {int(short.min())} to {int(short.max())} px, "
            f"{self.images.numel() / 2**20:.0f} MB)"
        )


def shrink(path: str, size: int) -> np.ndarray:
    """An image decoded and resized so that its shorter side is at most `size` (aspect kept), (H, W, 3) uint8."""
    from PIL import Image

    with open(path, "rb") as f:
        img: Any = Image.open(f)
        w, h = img.size
        scale = size / min(w, h)
        if scale < 1:
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
            img.draft("RGB", target)  # JPEG: decode at the smallest 1/2^k scale still at least `target`
            img = img.convert("RGB").resize(target, Image.Resampling.BILINEAR)
        return np.asarray(img.convert("RGB"))


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainkit"


def _key(samples: list[tuple[str, int]], size: int | None = None, variant: str = "") -> str:
    h = hashlib.sha256(f"trainkit-cache-{VERSION}".encode() + (f"-short-side-{size}-hwc".encode() if size else b""))
    h.update(f"-prepared-{variant}".encode() if variant else b"")
    for path, target in samples:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode())
    return h.hexdigest()[:32]


def _decode(
    samples: list[tuple[str, int]], workers: int, key: str, size: int | None = None, prepare: Any = None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """(images, targets, bad files, shapes): images (N, C, H, W), or flat (each (H, W, C)) with shapes (N, 2).
    `prepare`: transforms of the full-resolution PIL image whose output is stored (the val Resize + CenterCrop)."""

    def one(item: tuple[str, int]) -> np.ndarray | str:
        try:
            if prepare is not None:
                return np.asarray(prepare(load_rgb(item[0])))
            return shrink(item[0], size) if size else np.asarray(load_rgb(item[0]))
        except Exception as exc:  # any decoder failure is a bad file, named below
            return f"{item[0]} ({decode_failure(exc)})"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(one, samples, chunksize=64 if size else 256))
    bad = [d for d in decoded if isinstance(d, str)]
    good = [(d, t) for d, (_, t) in zip(decoded, samples) if not isinstance(d, str)]
    if not good:
        raise DataError(f"{key}: no image could be decoded")
    targets = np.asarray([t for _, t in good], dtype=np.int64)
    if size:  # ragged: each image's (H, W, C) pixels back to back
        flat = np.concatenate([d.reshape(-1) for d, _ in good])
        return flat, targets, bad, np.asarray([d.shape[:2] for d, _ in good], dtype=np.int64)
    shapes = {d.shape for d, _ in good}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise DataError(
            f"{key}: data.cache needs images of one size, found {a[1]}x{a[0]} and {b[1]}x{b[0]}; "
            "set data.cache_size (e.g. 160: photos stored with their shorter side at most 160 px), "
            "or set data.cache: none"
        )
    images = np.stack([d for d, _ in good]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), targets, bad, None


def _ragged(shapes: np.ndarray | None) -> dict[str, torch.Tensor | None]:
    if shapes is None:
        return {"shapes": None, "offsets": None}
    sizes = torch.from_numpy(shapes).prod(dim=1) * 3
    return {"shapes": torch.from_numpy(shapes), "offsets": torch.cumsum(sizes, 0) - sizes}


def cache_dataset(
    ds: ImageDataset,
    mode: str,
    cache_dir: str | None,
    workers: int,
    key: str,
    size: int | None = None,
    prepare: Any = None,
) -> Cached:
    """The decoded images of `ds` (an ImageFolder or a CIFAR dataset); with `size`, photos stored ragged; with
    `prepare` (deterministic PIL transforms that make one size), each photo's prepared pixels, from the original."""
    start = time.perf_counter()
    arrays, files = ds.arrays(), ds.files()
    if arrays is not None:  # CIFAR, MNIST: already decoded arrays (N, H, W, C)
        images = torch.from_numpy(np.ascontiguousarray(arrays.transpose(0, 3, 1, 2)))
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        return Cached(images=images, targets=labels, seconds=time.perf_counter() - start, source="arrays", skipped=[])
    samples = list(zip(files or [], ds.targets))
    if mode == "disk":
        folder = Path(cache_dir) if cache_dir else default_dir()
        path = folder / f"{_key(samples, None if prepare else size, repr(prepare) if prepare else '')}.npy"
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            info = json.loads(meta.read_text())
            images = np.load(path, mmap_mode="c")  # copy-on-write: never written back
            shapes = np.asarray(info["shapes"], dtype=np.int64) if info.get("shapes") is not None else None
            return Cached(
                images=torch.from_numpy(images),
                targets=torch.as_tensor(info["targets"]),
                seconds=time.perf_counter() - start,
                source="disk hit",
                skipped=info["skipped"],
                **_ragged(shapes),
            )
    decoded, targets, bad, shapes = _decode(samples, workers, key, None if prepare else size, prepare)
    if mode == "disk":
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.save(f, decoded), binary=True)
        info = {"targets": targets.tolist(), "skipped": bad, "shape": list(decoded.shape)}
        write_text_atomic(meta, json.dumps(info | {"shapes": shapes.tolist() if shapes is not None else None}))
    seconds = time.perf_counter() - start
    return Cached(
        images=torch.from_numpy(decoded),
        targets=torch.from_numpy(targets),
        seconds=seconds,
        source=mode,
        skipped=bad,
        **_ragged(shapes),
    )


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
        self.shapes = cached.shapes.tolist() if cached.shapes is not None else None  # ragged: host-side (H, W)
        self.offsets = cached.offsets.tolist() if cached.offsets is not None else None
        super().__init__(order, batch_size, drop_last)
        self.augment, self.device = augment, device
        # a ragged store draws each image's crop on the host (no device sync per image)
        self.gen = torch.Generator(device="cpu" if self.shapes is not None else self.images.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        store = self.images.device
        if isinstance(self.order, EpochSampler):
            pairs = list(self.order)
            order = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
            seeds: list[int] | None = [s for _, s in pairs]
        else:  # evaluation: a fixed order, no augmentation seeds
            order, seeds = torch.tensor(self.order, dtype=torch.int64), None
        bs = self.batch_size
        host_order = order.tolist() if self.shapes is not None else []
        order = order.to(store)  # one transfer per epoch: no host-device copy, so no sync, per batch
        for b in range(num_batches(len(order), bs, self.drop_last)):
            idx = order[b * bs : (b + 1) * bs]
            if self.shapes is not None:  # ragged: views of each image, made one size by the first crop or resize
                y = self.targets[idx].to(self.device)
                self.gen.manual_seed(seeds[b * bs] if seeds else 0)
                yield self.augment(self._views(host_order[b * bs : (b + 1) * bs]), self.gen), y
                continue
            x, y = self.images[idx], self.targets[idx]
            if store.type != self.device.type:  # the cache stayed in host memory
                if self.device.type == "cuda":
                    x, y = x.pin_memory().to(self.device, non_blocking=True), y.to(self.device)
                else:
                    x, y = x.to(self.device), y.to(self.device)
            self.gen.manual_seed(seeds[b * bs] if seeds else 0)  # each batch's augmentation has its own seed
            yield self.augment(x, self.gen), y

    def _views(self, indices: list[int]) -> list[torch.Tensor]:
        assert self.shapes is not None and self.offsets is not None
        spans = [(self.shapes[i], self.offsets[i]) for i in indices]
        return ragged_views(self.images, spans, self.device)


def ragged_views(images: torch.Tensor, spans: list[tuple[list[int], int]], device: torch.device) -> list[torch.Tensor]:
    """The photos of a ragged store at `spans` ((H, W), offset) as (3, H, W) channels_last views on `device`.
    A store in host memory for another device is copied once per batch: the batch's photos gathered into one
    (pinned, for CUDA) buffer and sent in one transfer, not one transfer per photo."""
    if images.device != device:
        images, spans = gathered(images, spans)
        images = (images.pin_memory() if device.type == "cuda" else images).to(device, non_blocking=True)
    return [images[start : start + 3 * h * w].view(h, w, 3).permute(2, 0, 1) for (h, w), start in spans]


def gathered(
    images: torch.Tensor, spans: list[tuple[list[int], int]]
) -> tuple[torch.Tensor, list[tuple[list[int], int]]]:
    """The pixels of the photos at `spans` back to back in one new buffer, and their spans in it."""
    sizes = [3 * h * w for (h, w), _ in spans]
    flat = torch.cat([images[start : start + n] for (_, start), n in zip(spans, sizes)])
    return flat, [(shape, at) for (shape, _), at in zip(spans, itertools.accumulate(sizes, initial=0))]
