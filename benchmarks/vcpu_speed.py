"""How the host runs this machine's vCPUs: the measurements behind make bench's speed probe (benchlib.py).

    python benchmarks/vcpu_speed.py [--seconds 60] [--window 4]

1. A fixed pure-Python loop pinned to each vCPU, both at once, for --seconds: each quarter second is fast or
   slow (its median loop time under 1.35 times the vCPU's fastest), the share of fast time, the longest slow
   stretch, and how often both vCPUs stayed fast through a whole --window seconds.
2. On one vCPU, the same loop, a small convolution, a JPEG decode with resize and SHA-256 in turn for
   --seconds / 2: how much slower each runs in the slow stretches (what the loop says is slow), against the fast
   ones. A clock that slows slows them all alike; a busy sibling hardware thread slows some more than others.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import time

LOOP = 50_000


def loop() -> None:
    total = 0
    for i in range(LOOP):
        total += i


def pinned(cpu: int, seconds: float) -> None:
    """Child: the loop's times on `cpu`, as JSON [[t, ms], ...]."""
    os.sched_setaffinity(0, {cpu})
    out, end = [], time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        loop()
        out.append((t0, (time.perf_counter() - t0) * 1000))
    print(json.dumps(out))


def quarters(samples: list) -> list[bool]:
    best = sorted(ms for _, ms in samples)[len(samples) // 100]
    start, buckets = samples[0][0], {}
    for t, ms in samples:
        buckets.setdefault(int((t - start) * 4), []).append(ms)
    return [statistics.median(v) < 1.35 * best for _, v in sorted(buckets.items())]


def longest(flags: list[bool], value: bool) -> float:
    run = best = 0
    for f in flags:
        run = run + 1 if f == value else 0
        best = max(best, run)
    return best / 4


def sensitivity(seconds: float) -> dict[str, float]:
    import torch
    from PIL import Image

    os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    x, w = torch.randn(32, 32, 32, 32), torch.randn(64, 32, 3, 3)
    pixels = io.BytesIO()
    Image.frombytes("RGB", (500, 375), os.urandom(500 * 375 * 3)).save(pixels, "JPEG", quality=90)
    jpeg, data = pixels.getvalue(), b"x" * (256 * 1024)
    work = {
        "python loop": loop,
        "convolution": lambda: torch.nn.functional.conv2d(x, w, padding=1),
        "JPEG decode + resize": lambda: Image.open(io.BytesIO(jpeg)).convert("RGB").resize((224, 224)),
        "SHA-256": lambda: hashlib.sha256(data).digest(),
    }
    rows, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        row = []
        for f in work.values():
            t0 = time.perf_counter()
            f()
            row.append(time.perf_counter() - t0)
        rows.append(row)
    best = [sorted(col)[len(col) // 100] for col in zip(*rows)]
    fast = [r for r in rows if r[0] < 1.3 * best[0]]
    slow = [r for r in rows if r[0] > 1.6 * best[0]]
    if not fast or not slow:
        return {}
    return {
        name: statistics.median(r[i] for r in slow) / statistics.median(r[i] for r in fast)
        for i, name in enumerate(work)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--window", type=float, default=4)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return pinned(args.child, args.seconds)
    cpus = sorted(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", str(c), "--seconds", str(args.seconds)],
                         stdout=subprocess.PIPE, text=True)
        for c in cpus
    ]  # fmt: skip
    flags = [quarters(json.loads(p.communicate()[0])) for p in procs]
    for cpu, f in zip(cpus, flags):
        print(f"vCPU {cpu}: fast {sum(f) / len(f):.0%} of the time; longest slow stretch {longest(f, False):.2f} s, "
              f"longest fast {longest(f, True):.2f} s; " + "".join("F" if x else "s" for x in f[:80]))  # fmt: skip
    n, w = min(map(len, flags)), int(args.window * 4)
    both = [all(all(f[i : i + w]) for f in flags) for i in range(n - w)]
    print(f"every vCPU fast through a whole {args.window:g} s window: {sum(both) / max(len(both), 1):.0%} of them")
    ratios = sensitivity(args.seconds / 2)
    if not ratios:
        print("no slow (or no fast) stretch on vCPU 0 during the sensitivity test: nothing to compare")
    for name, ratio in ratios.items():
        print(f"slow stretches against fast, {name}: {ratio:.2f} times as long")


if __name__ == "__main__":
    main()
