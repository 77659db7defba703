"""Accuracy parity: trainkit against an independent hand-written loop, same recipe, full CIFAR-10 JPEGs.

`make bench` shows trainkit is faster; this shows it learns as well. The hand loop shares no code with
trainkit: torchvision ImageFolder with PIL transforms, DataLoader(shuffle=True), plain SGD over
model.parameters(), OneCycleLR stepped per batch, label smoothing, fp32, and a plain accuracy count
on the 10,000 test images after every epoch. trainkit runs `configs/bench_cifar10.yaml` (the cached
data path with batched augmentation) with weight decay on every parameter, as the hand loop does.

    python benchmarks/parity.py [--epochs 10] [--seeds 0 1] [--device cpu|cuda]

Ends with one line per approach: `<name> seed S: final val_acc X.XXXX (best Y.YYYY)`, and saves JSON
under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import BATCH, MEAN, ROOT, STD, TARBALL, bench_model, unpack


def hand_loop(data: Path, epochs: int, seed: int, device: str) -> list[float]:
    """The loop a user writes from the PyTorch tutorial, with the config's recipe; val_acc per epoch."""
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(seed)
    dev = torch.device(device)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    val_tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    train = torch.utils.data.DataLoader(
        datasets.ImageFolder(data / "train", train_tf), batch_size=BATCH, shuffle=True, num_workers=2
    )
    val = torch.utils.data.DataLoader(datasets.ImageFolder(data / "test", val_tf), batch_size=500, num_workers=2)
    model = bench_model().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=epochs, steps_per_epoch=len(train))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    accs = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train:
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
                total += len(y)
        accs.append(correct / total)
        print(f"hand epoch {epoch + 1}: val_acc {accs[-1]:.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
    return accs


def trainkit_run(data: Path, epochs: int, seed: int, device: str) -> list[float]:
    run_dir = Path(tempfile.mkdtemp(prefix="trainkit-parity-"))
    sets = [
        f"data.train={data / 'train'}",
        f"data.val={data / 'test'}",
        f"train.epochs={epochs}",
        f"seed={seed}",
        f"device={device}",
        "optim.decay_norm_and_bias=true",  # weight decay on every parameter, like SGD(model.parameters())
        "log.progress=lines",
    ]
    args = [sys.executable, "-m", "trainkit", "train", "--config", str(ROOT / "configs" / "bench_cifar10.yaml")]
    args += ["--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        print(f"trainkit epoch {r['epoch']}: val_acc {r['val_acc']:.4f} ({r['time']:.0f}s)", flush=True)
    return [r["val_acc"] for r in records]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tarball", type=Path, default=TARBALL)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-bench-cifar10")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    data = unpack(args.tarball, args.work)
    results: dict[str, dict[int, list[float]]] = {"hand": {}, "trainkit": {}}
    for seed in args.seeds:
        results["trainkit"][seed] = trainkit_run(data, args.epochs, seed, args.device)
        results["hand"][seed] = hand_loop(data, args.epochs, seed, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"parity-{args.device}-{stamp}.json"
    meta = {"epochs": args.epochs, "device": args.device, "machine": platform.node(), "config": "bench_cifar10.yaml"}
    path.write_text(json.dumps({**meta, "val_acc_per_epoch": results}, indent=2) + "\n")
    print(f"wrote {path}")
    for name, by_seed in results.items():
        for seed, accs in by_seed.items():
            print(f"{name} seed {seed}: final val_acc {accs[-1]:.4f} (best {max(accs):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
