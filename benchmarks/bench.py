"""make bench: trainkit against the loop users write by hand, on real CIFAR-10 JPEGs.

Three approaches train the same model (3 Conv-BN-ReLU blocks of 32, 64, 128
channels, max-pool after each, global average pool, Linear to 10), with SGD
and momentum, batch 128 and the same augmentation (RandomCrop 32 padding 4,
horizontal flip, normalize):

  (a) idiomatic: torchvision ImageFolder + PIL transforms, DataLoader(num_workers=2, shuffle=True), a hand loop;
  (b) ceiling:   the same model and optimizer stepping on preloaded tensors in the fastest memory format;
  (c) trainkit:  `configs/bench_cifar10.yaml` through trainkit's own setup and training loop.

Each approach lives in its own process, so peak RSS is its own. The parent
warms each up, then interleaves them (a, b, c; b, c, a; ...) over several
repetitions of a fixed number of steps, and reports median images/s, the
ratios c/a and c/b, peak RSS, and the one-time cost of trainkit's cache.

    python benchmarks/bench.py [--steps 40] [--reps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
BATCH = 128


# ----------------------------------------------------------------------------- data


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack the CIFAR-10 JPEGs once; later runs reuse them."""
    marker = dest / ".complete"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter="data")
        marker.write_text(str(tarball))
    return dest


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


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


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


def worker_ceiling(data: Path, steps: int, device):
    """(b) No data cost at all: normalized tensors preloaded on the device, in the faster memory format."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    files = sorted((data / "train").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(files), size=min(len(files), steps * BATCH), replace=False)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    x = np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in pick])
    y = torch.tensor([classes.index(files[i].parent.name) for i in pick])
    x = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    loss_fn = nn.CrossEntropyLoss()

    def make(fmt):
        model = bench_model().to(device).to(memory_format=fmt)
        return model, sgd(model), x.to(device).contiguous(memory_format=fmt), y.to(device)

    def stepper(model, opt, xs, ys):
        gen = torch.Generator().manual_seed(0)

        def run(n: int) -> None:
            for _ in range(n):
                idx = torch.randint(0, len(ys), (BATCH,), generator=gen).to(device)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xs[idx]), ys[idx]).backward()
                opt.step()

        return run

    timings = {}
    for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        run = stepper(*make(fmt))
        run(3)
        sync(device)
        start = time.perf_counter()
        run(8)
        sync(device)
        timings[name] = time.perf_counter() - start
    best = min(timings, key=timings.get)
    fmt = torch.channels_last if best == "channels_last" else torch.contiguous_format
    return stepper(*make(fmt)), {"memory_format": best}


def worker_trainkit(data: Path, steps: int, device):
    """(c) trainkit: the shipped config, through trainkit's own setup and training loop."""
    from trainkit import config, engine
    from trainkit.cache import cache_dataset
    from trainkit.images import ImageFolder
    from trainkit.run import build_run

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
    cfg = config.load_config(
        ROOT / "configs" / "bench_cifar10.yaml",
        [
            f"data.train={data / 'train'}",
            f"data.val={data / 'test'}",
            f"data.subset={steps * BATCH}",
            f"run_dir={run_dir}",
            f"device={device}",
            "train.log_every=1000",
            "log.progress=off",
            "data.cache=disk",
            f"data.cache_dir={cache_dir}",
        ],
    )
    start = time.perf_counter()
    run = build_run(cfg)
    info["setup_s"] = time.perf_counter() - start
    info["notes"] = run.data.notes
    epoch = 0

    def go(n: int) -> None:
        nonlocal epoch
        assert n == steps, "trainkit runs whole epochs of the subset"
        engine.train_one_epoch(run, epoch)
        epoch += 1

    return go, info


WORKERS = {"a": worker_idiomatic, "b": worker_ceiling, "c": worker_trainkit}


def serve(kind: str, data: Path, steps: int, device_name: str) -> None:
    """A worker process: set up, then answer `run N` with the seconds N steps took."""
    import torch

    device = torch.device(device_name)
    start = time.perf_counter()
    run, info = WORKERS[kind](data, steps, device)
    print(json.dumps({"ready": time.perf_counter() - start, **info}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            return
        n = int(cmd[1])
        sync(device)
        t0 = time.perf_counter()
        run(n)
        sync(device)
        print(json.dumps({"seconds": time.perf_counter() - t0, "steps": n}), flush=True)


# ----------------------------------------------------------------------------- parent


def tree_rss(pid: int) -> int:
    """Resident set size of a process and its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Worker:
    def __init__(self, kind: str, args: argparse.Namespace, data: Path) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--data",
                str(data),
                "--steps",
                str(args.steps),
                "--device",
                args.device,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.peak = 0
        self.info = self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.kind} died; run it alone to see why")
        return json.loads(line)

    def run(self, steps: int) -> float:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self.read()["seconds"]

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed repetition (default 40)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tarball", type=Path, default=TARBALL)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-bench-cifar10")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.worker, args.data, args.steps, args.device)
        return 0

    start = time.perf_counter()
    data = unpack(args.tarball, args.work)
    unpack_s = time.perf_counter() - start
    print(f"data: {data} (unpacked in {unpack_s:.1f}s)", flush=True)
    names = {"a": "idiomatic", "b": "ceiling", "c": "trainkit"}
    workers = {k: Worker(k, args, data) for k in "abc"}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for w in workers.values():
                w.peak = max(w.peak, tree_rss(w.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for w in workers.values():
        w.run(args.steps)  # warm-up: worker start-up, allocator, caches
    times = {k: [] for k in workers}
    order = list("abc")
    for rep in range(args.reps):
        for k in order[rep % 3 :] + order[: rep % 3]:
            times[k].append(workers[k].run(args.steps))
        print(
            f"rep {rep + 1}/{args.reps}: "
            + ", ".join(f"{names[k]} {args.steps * BATCH / times[k][-1]:.0f} img/s" for k in "abc"),
            flush=True,
        )
    stop.set()
    sampler.join()
    for w in workers.values():
        w.close()

    ips = {k: [args.steps * BATCH / t for t in times[k]] for k in "abc"}
    med = {k: statistics.median(v) for k, v in ips.items()}
    result = {
        "device": args.device,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "gpu": _gpu_name() if args.device.startswith("cuda") else None,
        "steps_per_rep": args.steps,
        "reps": args.reps,
        "batch_size": BATCH,
        "images_per_s": {names[k]: ips[k] for k in "abc"},
        "median_images_per_s": {names[k]: med[k] for k in "abc"},
        "peak_rss_mb": {names[k]: workers[k].peak / 2**20 for k in "abc"},
        "ceiling_memory_format": workers["b"].info.get("memory_format"),
        "trainkit_one_time": {k: v for k, v in workers["c"].info.items() if k != "ready"},
        "unpack_s": unpack_s,
        "ratio_vs_idiomatic": med["c"] / med["a"],
        "ratio_vs_ceiling": med["c"] / med["b"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench-{args.device.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'':12}{'median img/s':>14}{'peak RSS MB':>14}")
    for k in "abc":
        print(f"{names[k]:12}{med[k]:>14.0f}{workers[k].peak / 2**20:>14.0f}")
    one = result["trainkit_one_time"]
    print(
        f"trainkit cache, 50,000 images: build {one['cache_build_s_50k']:.1f}s, reopen {one['cache_reopen_s_50k']:.2f}s"
    )
    print(f"results: {out}")
    print(f"ratio_vs_idiomatic={result['ratio_vs_idiomatic']:.2f} ratio_vs_ceiling={result['ratio_vs_ceiling']:.2f}")
    return 0


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == "__main__":
    sys.exit(main())
