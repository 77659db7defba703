"""make bench: trainkit against the loop users write by hand, in three sections: real CIFAR-10 JPEGs (below),
the flowers photos at 128 px (`photo_suite`) and fine-tuning a pretrained network at 224 px (bench_finetune.py).

In the first section three approaches train the same model (3 Conv-BN-ReLU blocks of 32, 64, 128
channels, max-pool after each, global average pool, Linear to 10), with SGD
and momentum, batch 128 and the same augmentation (RandomCrop 32 padding 4,
horizontal flip, normalize):

  (a) idiomatic: torchvision ImageFolder + PIL transforms, DataLoader(num_workers=2, shuffle=True), a hand loop;
  (b) ceiling:   the model's bare training step: trainkit's own model, optimizer, parameter groups, scheduler,
                 loss, memory format and autocast, in a plain loop on batches already augmented and on the
                 device; trainkit does strictly more, so c/b measures all it adds (data and loop);
  (c) trainkit:  `configs/bench_cifar10.yaml` through trainkit's own setup and training loop.

Each approach lives in its own process (and process group), so peak RSS is its own. The parent warms each
up, then interleaves them (a, b, c; b, c, a; ...) over several repetitions of a fixed number of steps. Each
timed window runs alone: the other approaches' process groups (DataLoader workers included) are stopped
with SIGSTOP for the window and continued after (SIGCONT); the CPU seconds they use meanwhile are measured
and reported (`--no-isolate` lets them run, to see their interference). It reports median, min and max
images/s, the ratios c/a and c/b, peak RSS and the one-time cost of trainkit's cache, and checks itself:
a repetition outside the others' range (a spread over 15%) is measured again, up to 3 times, and each retry
is printed with what the slow window cost that process (page faults, preemptions, CPU seconds, CPU clock, and
the time of a fixed loop just before and after the window: the speed of the core the host gave it) beside the
retry's; when trainkit beats its ceiling by more than the noise, or any approach's spread still
exceeds 15% after the retries, it says so on its last lines and exits 1.

    python benchmarks/bench.py [--steps 40] [--reps 5] [--device cpu|cuda] [--no-isolate] [--sections cifar,photos,finetune]

The machinery (workers, isolation, retries, self-check) is benchlib.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_finetune
from benchlib import (
    NAMES,
    ROOT,
    Worker,
    bare_steps,
    device_batches,
    measure,
    rates,
    self_check,
    serve,
    tree_rss,
    unpack,
    whole_epochs,
)

TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
BATCH = 128
PHOTO_BATCH = 64  # configs/bench_flowers.yaml
PHOTO_EPOCHS = 2  # epochs of the photo subset per timed window: one epoch of (a) varied by 15 to 20%
FLOWERS = ROOT.parent / "shared" / "data" / "flowers-photos.tar.gz"
SECTIONS = ("cifar", "photos", "finetune")


# ----------------------------------------------------------------------------- workers


def bench_model():
    from torch import nn

    layers, c_in = [], 3
    for c in (32, 64, 128):
        layers += [nn.Conv2d(c_in, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def sgd(model):
    import torch

    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def worker_idiomatic(data: Path, steps: int, device):
    """(a) What a user writes: ImageFolder, PIL transforms, a DataLoader with 2 workers, a plain loop."""
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(data / "train", tf),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        pin_memory=device.type == "cuda",
    )
    model, loss_fn = bench_model().to(device), nn.CrossEntropyLoss()
    opt = sgd(model)
    batches = iter(loader)
    running = 0.0

    def run(n: int) -> None:
        nonlocal batches, running
        for _ in range(n):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()

    return run, {}


def trainkit_config(data: Path, steps: int, device, run_dir: Path, cache: list[str], photos: bool = False):
    """`configs/bench_cifar10.yaml` (or `bench_flowers.yaml`) over a subset of `steps` batches (one epoch per
    timed window)."""
    from trainkit.run import config

    return config.load_config(
        ROOT / "configs" / ("bench_flowers.yaml" if photos else "bench_cifar10.yaml"),
        [
            f"data.train={data / 'train'}",
            f"data.val={data / ('val' if photos else 'test')}",
            f"data.subset={steps * (PHOTO_BATCH if photos else BATCH)}",
            f"run_dir={run_dir}",
            f"device={device}",
            "train.log_every=1000",
            "train.epochs=1000",  # a schedule longer than every window the benchmark runs (OneCycleLR counts steps)
            "log.progress=off",
            "log.report=false",
            *cache,
        ],
    )


def worker_ceiling(data: Path, steps: int, device, photos: bool = False):
    """(b) The model's bare training step: trainkit's own model, optimizer and parameter groups, scheduler,
    loss, memory format and autocast (built by trainkit's `build_run` from the same config as (c)), in a plain
    loop that does nothing else, on batches that are already augmented and already on the device (one
    epoch of (c)'s own loader, collected before timing). trainkit does strictly more, so c <= b."""

    from trainkit.run.build import build_run

    run_dir = Path(tempfile.mkdtemp(prefix="trainkit-bench-b-"))
    cfg = trainkit_config(data, steps, device, run_dir, [] if photos else ["data.cache=memory"], photos)
    run = build_run(cfg)
    batches = device_batches(run, 0)
    go = bare_steps(run, batches)
    return go, {"memory_format": "channels_last" if run.channels_last else "contiguous", "batches": len(batches)}


def worker_trainkit(data: Path, steps: int, device):
    """(c) trainkit: the shipped config, through trainkit's own setup and training loop."""
    from trainkit.data.cache import cache_dataset
    from trainkit.data.images import ImageFolder
    from trainkit.run.build import build_run

    run_dir = Path(tempfile.mkdtemp(prefix="trainkit-bench-run-"))
    cache_dir = Path(tempfile.mkdtemp(prefix="trainkit-bench-cache-"))
    info = {}
    full = ImageFolder(str(data / "train"), None, "data.train")
    start = time.perf_counter()
    cache_dataset(full, "disk", str(cache_dir), os.cpu_count() or 1, "data.train")
    info["cache_build_s_50k"] = time.perf_counter() - start  # decode 50,000 JPEGs once, save the .npy
    start = time.perf_counter()
    cache_dataset(full, "disk", str(cache_dir), os.cpu_count() or 1, "data.train")
    info["cache_reopen_s_50k"] = time.perf_counter() - start  # the next run: memory-map it
    cfg = trainkit_config(data, steps, device, run_dir, ["data.cache=disk", f"data.cache_dir={cache_dir}"])
    start = time.perf_counter()
    run = build_run(cfg)
    info["setup_s"] = time.perf_counter() - start
    info["notes"] = run.data.notes
    return whole_epochs(run, steps), info


def worker_photo_idiomatic(data: Path, steps: int, device):
    """(a) on photos: ImageFolder, PIL RandomResizedCrop(128) and flip, DataLoader(num_workers=2, shuffle=True),
    the bench_flowers model in a plain loop; `data_only` pulls batches without the model. Like (c), each timed
    window is whole epochs (PHOTO_EPOCHS) over the same seeded subset of `steps` batches, the DataLoader
    starting its workers each epoch as a user's does."""
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    from trainkit.data.build import subset_indices
    from trainkit.models import build as models

    cfg = trainkit_config(data, steps, device, Path(tempfile.mkdtemp(prefix="trainkit-bench-pa-")), [], True)
    norm = next(c for c in cfg.data.transforms.train_calls if c.name == "Normalize")
    tf = T.Compose([T.RandomResizedCrop(128, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(norm.kwargs["mean"], norm.kwargs["std"])])  # fmt: skip
    photos = datasets.ImageFolder(data / "train", tf)
    subset = torch.utils.data.Subset(photos, subset_indices(len(photos), steps * PHOTO_BATCH, cfg.seed))
    loader = torch.utils.data.DataLoader(subset, batch_size=PHOTO_BATCH, shuffle=True, num_workers=2)
    model, loss_fn = models.build_model(cfg.model, seed=0).to(device), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def run(n: int) -> None:
        assert n % steps == 0, "whole epochs of the subset"
        for _ in range(n // steps):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

    def data_only(n: int) -> None:
        assert n % steps == 0, "whole epochs of the subset"
        for _ in range(n // steps):
            for _ in loader:
                pass

    run.data_only = data_only  # type: ignore[attr-defined]
    return run, {}


def worker_photo_ceiling(data: Path, steps: int, device):
    return worker_ceiling(data, steps, device, photos=True)


def worker_photo_trainkit(data: Path, steps: int, device):
    """(c) on photos: configs/bench_flowers.yaml (the photo store) through trainkit's loop."""
    from trainkit.data.cache import cache_dataset
    from trainkit.data.images import ImageFolder
    from trainkit.run.build import build_run

    full = ImageFolder(str(data / "train"), None, "data.train")
    start = time.perf_counter()
    cache_dataset(full, "memory", None, os.cpu_count() or 1, "data.train", 160)
    info = {"store_build_s": time.perf_counter() - start, "photos": len(full.samples)}
    run = build_run(trainkit_config(data, steps, device, Path(tempfile.mkdtemp(prefix="trainkit-bench-pc-")), [], True))
    return whole_epochs(run, steps), info


WORKERS = {
    "a": worker_idiomatic,
    "b": worker_ceiling,
    "c": worker_trainkit,
    "pa": worker_photo_idiomatic,
    "pb": worker_photo_ceiling,
    "pc": worker_photo_trainkit,
    **bench_finetune.WORKERS,
}


def flowers(args: argparse.Namespace) -> Path:
    """The flowers photos (train and val), unpacked once."""
    return unpack(args.flowers, Path(tempfile.gettempdir()) / "trainkit-bench-flowers") / "flowers"


def photo_suite(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The photo section: (a), (b), (c) on the flowers train photos at 128 px, then data only for (a) and (c)."""
    data = flowers(args)
    workers = {k: Worker(f"p{k}", args, data, args.photo_steps) for k in "abc"}
    steps = PHOTO_EPOCHS * args.photo_steps  # a window: whole epochs of the subset
    try:
        times, seen = measure(workers, args, steps, PHOTO_BATCH)
        only, seen_data = measure({k: workers[k] for k in "ac"}, args, steps, PHOTO_BATCH, "data")
    finally:
        for w in workers.values():
            w.close()
    r, data = rates(times, seen, steps * PHOTO_BATCH), rates(only, seen_data, steps * PHOTO_BATCH)
    med, spread, data_med = r["med"], r["spread"], data["med"]
    result = {
        "steps_per_rep": steps,
        "batch_size": PHOTO_BATCH,
        "images_per_s": r["ips"],
        "median_images_per_s": med,
        "spread": spread,
        "raw_images_per_s": r["raw_ips"],
        "raw_median_images_per_s": r["raw_med"],
        "raw_spread": r["raw_spread"],
        "vcpu_speed": {k: [w["speed"] for w in v] for k, v in seen["windows"].items()},
        "window_stats": seen["windows"],
        "data_only_images_per_s": data["ips"],
        "data_only_median": data_med,
        "data_only_spread": data["spread"],
        "data_only_ratio": data_med["c"] / data_med["a"],
        "store": workers["c"].info,
        "retries": seen["retries"] + seen_data["retries"],
        "photos_ratio_vs_idiomatic": med["c"] / med["a"],
        "photos_ratio_vs_ceiling": med["c"] / med["b"],
        "raw_photos_ratio_vs_idiomatic": r["raw_med"]["c"] / r["raw_med"]["a"],
        "raw_photos_ratio_vs_ceiling": r["raw_med"]["c"] / r["raw_med"]["b"],
    }
    return result, [f"photos: {p}" for p in self_check(med, spread)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed repetition (default 40)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tarball", type=Path, default=TARBALL)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-bench-cifar10")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="let the other approaches' processes run during a timed window (to measure their interference)",
    )
    parser.add_argument(
        "--photo-steps",
        type=int,
        default=25,
        help="photo steps per epoch of the subset (default 25; 2 epochs a window)",
    )
    parser.add_argument("--flowers", type=Path, default=FLOWERS)
    parser.add_argument("--no-photos", action="store_true", help="leave the photo section out")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"the sections to run, of {','.join(SECTIONS)} (default all)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(WORKERS[args.worker], args.data, args.steps, args.device)
        return 0

    sections = set(args.sections.split(",")) - ({"photos"} if args.no_photos else set())
    if unknown := sections - set(SECTIONS):
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    result: dict = {"device": args.device, "host": platform.node(), "cpu_count": os.cpu_count(),
                    "gpu": _gpu_name() if args.device.startswith("cuda") else None, "reps": args.reps,
                    "isolated": not args.no_isolate, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    problems: list[str] = []
    if "cifar" in sections:
        cifar, found = cifar_suite(args)
        result |= cifar
        problems += found
    if "photos" in sections:
        result["photos"], found = photo_suite(args)
        problems += found
    if "finetune" in sections:
        result["finetune"], found = bench_finetune.suite(args, flowers(args))
        problems += found
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench-{args.device.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}")
    if "cifar" in sections:
        print_cifar(result)
    if "photos" in result:
        print_photos(result["photos"])
    if "finetune" in result:
        bench_finetune.report(result["finetune"])
    for line in problems:
        print(f"NOT TRUSTWORTHY: {line}")
    return 1 if problems else 0


def cifar_suite(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The first section: (a), (b), (c) on the CIFAR-10 training JPEGs, with each approach's peak RSS."""
    start = time.perf_counter()
    data = unpack(args.tarball, args.work)
    unpack_s = time.perf_counter() - start
    print(f"data: {data} (unpacked in {unpack_s:.1f}s)", flush=True)
    workers = {k: Worker(k, args, data) for k in "abc"}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for w in workers.values():
                w.peak = max(w.peak, tree_rss(w.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times, interference = measure(workers, args, args.steps, BATCH)
    stop.set()
    sampler.join()
    for w in workers.values():
        w.close()

    r = rates(times, interference, args.steps * BATCH)
    ips, med, spread = r["ips"], r["med"], r["spread"]
    result = {
        "steps_per_rep": args.steps,
        "batch_size": BATCH,
        "images_per_s": {NAMES[k]: ips[k] for k in "abc"},
        "median_images_per_s": {NAMES[k]: med[k] for k in "abc"},
        "min_max_images_per_s": {NAMES[k]: [min(ips[k]), max(ips[k])] for k in "abc"},
        "spread": {NAMES[k]: spread[k] for k in "abc"},
        "raw_median_images_per_s": {NAMES[k]: r["raw_med"][k] for k in "abc"},
        "raw_spread": {NAMES[k]: r["raw_spread"][k] for k in "abc"},
        "others_cpu_s_during_window": {NAMES[k]: interference["others_cpu_s"][k] for k in "abc"},
        "steal_s_during_window": {NAMES[k]: interference["steal_s"][k] for k in "abc"},
        "window_stats": {NAMES[k]: interference["windows"][k] for k in "abc"},
        "retries": interference["retries"],
        "peak_rss_mb": {NAMES[k]: workers[k].peak / 2**20 for k in "abc"},
        "ceiling_memory_format": workers["b"].info.get("memory_format"),
        "trainkit_one_time": {k: v for k, v in workers["c"].info.items() if k != "ready"},
        "unpack_s": unpack_s,
        "ratio_vs_idiomatic": med["c"] / med["a"],
        "ratio_vs_ceiling": med["c"] / med["b"],
        "raw_ratio_vs_idiomatic": r["raw_med"]["c"] / r["raw_med"]["a"],
        "raw_ratio_vs_ceiling": r["raw_med"]["c"] / r["raw_med"]["b"],
    }
    return result, self_check(med, spread)


def print_cifar(result: dict) -> None:
    print(f"\n{'':12}{'median img/s':>14}{'min':>8}{'max':>8}{'spread':>8}{'raw median':>12}{'raw spread':>12}"
          f"{'peak RSS MB':>14}")  # fmt: skip
    for name in NAMES.values():
        lo, hi = result["min_max_images_per_s"][name]
        print(f"{name:12}{result['median_images_per_s'][name]:>14.0f}{lo:>8.0f}{hi:>8.0f}"
              f"{result['spread'][name]:>8.1%}{result['raw_median_images_per_s'][name]:>12.0f}"
              f"{result['raw_spread'][name]:>12.1%}{result['peak_rss_mb'][name]:>14.0f}")  # fmt: skip
    one = result["trainkit_one_time"]
    print(
        f"trainkit cache, 50,000 images: build {one['cache_build_s_50k']:.1f}s, reopen {one['cache_reopen_s_50k']:.2f}s"
    )
    print(f"raw (wall seconds as they were): c/a {result['raw_ratio_vs_idiomatic']:.2f}, "
          f"c/b {result['raw_ratio_vs_ceiling']:.2f}")  # fmt: skip
    print(f"ratio_vs_idiomatic={result['ratio_vs_idiomatic']:.2f} ratio_vs_ceiling={result['ratio_vs_ceiling']:.2f}")


def print_photos(photos: dict) -> None:
    print(f"\nphotos (flowers train, 128 px, batch {photos['batch_size']}):")
    print(f"{'':12}{'median img/s':>14}{'spread':>8}{'raw median':>12}{'raw spread':>12}{'data only img/s':>17}")
    for k in "abc":
        only = photos["data_only_median"].get(k)
        print(
            f"{NAMES[k]:12}{photos['median_images_per_s'][k]:>14.0f}{photos['spread'][k]:>8.1%}"
            f"{photos['raw_median_images_per_s'][k]:>12.0f}{photos['raw_spread'][k]:>12.1%}"
            + (f"{only:>17.0f}" if only else f"{'-':>17}")
        )
    store = photos["store"]
    print(f"photo store, {store['photos']} photos: built in {store['store_build_s']:.1f}s")
    print(f"data only: trainkit {photos['data_only_ratio']:.1f}x the idiomatic loader")
    print(f"raw: c/a {photos['raw_photos_ratio_vs_idiomatic']:.2f}, c/b {photos['raw_photos_ratio_vs_ceiling']:.2f}")
    print(
        f"photos_ratio_vs_idiomatic={photos['photos_ratio_vs_idiomatic']:.2f} "
        f"photos_ratio_vs_ceiling={photos['photos_ratio_vs_ceiling']:.2f}"
    )


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == "__main__":
    sys.exit(main())
