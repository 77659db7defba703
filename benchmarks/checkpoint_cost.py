"""The cost of one checkpoint write (train.checkpoint_every): resnet18's model and SGD-with-momentum state,
written as trainkit writes last.pt (torch.save to a temporary file, fsync, rename, fsync of the folder).

    .venv/bin/python benchmarks/checkpoint_cost.py [FOLDER]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from trainkit.store import checkpoint


def main() -> None:
    model = torchvision.models.resnet18(num_classes=1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()  # the momentum buffers exist, as in a real run
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": checkpoint.rng_state()}
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as folder:
        path = Path(folder) / "last.pt"
        times = []
        for _ in range(7):
            start = time.perf_counter()
            checkpoint.atomic_save(ckpt, path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size / 1e6
    print(
        f"resnet18 checkpoint ({size:.1f} MB): median {statistics.median(times):.3f} s a save "
        f"(min {min(times):.3f}, max {max(times):.3f}, 7 saves)"
    )


if __name__ == "__main__":
    main()
