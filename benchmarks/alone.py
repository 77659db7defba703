"""One approach of make bench alone, window after window: does it settle, and how do its raw and full-speed
images/s move when no other approach shares the machine?

    python benchmarks/alone.py [--worker fa-unfrozen] [--steps 6] [--batch 32] [--windows 9]

--worker is one of bench.py's workers (a, b, c; pa, pb, pc; f{a,b,c}-{frozen,unfrozen}); --steps the steps a
window, as that section uses; --batch its batch size (for images/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import bench
import benchlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default="fa-unfrozen", choices=sorted(bench.WORKERS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--windows", type=int, default=9)
    args = parser.parse_args()
    cifar = args.worker in ("a", "b", "c")
    data = (
        benchlib.unpack(bench.TARBALL, Path(tempfile.gettempdir()) / "trainkit-bench-cifar10")
        if cifar
        else bench.flowers(argparse.Namespace(flowers=bench.FLOWERS))
    )
    worker = benchlib.Worker(args.worker, argparse.Namespace(device="cpu", steps=args.steps), data, args.steps)
    probe, start, images = benchlib.probe(), time.perf_counter(), args.steps * args.batch
    try:
        for i in range(args.windows):
            steal = benchlib.steal_s()
            w = worker.run(args.steps)
            speed = probe.speed(w["start"], w["start"] + w["seconds"])
            print(f"window {i + 1} at {time.perf_counter() - start:.0f} s: {images / w['seconds']:.2f} images/s raw, "
                  f"{images / (w['seconds'] * speed):.2f} at full speed (vCPU speed {speed:.2f}), "
                  f"{w['minor_faults']} minor faults, {w['cpu_s']:.1f} CPU-s, steal {benchlib.steal_s() - steal:.2f} s",
                  flush=True)  # fmt: skip
    finally:
        worker.close()


if __name__ == "__main__":
    main()
