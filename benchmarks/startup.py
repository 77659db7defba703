"""The wall time of the short commands a user runs many times a day, beside the floor every command pays
(`python -c "import torch, torchvision"`), medians of 5 runs each, in one run:

    .venv/bin/python benchmarks/startup.py

It trains the digits for one epoch in a temporary folder first (the run that `eval` and `predict` read), and
lays 200 run directories for `trainkit runs` (copies of that run's config.yaml, metrics.jsonl, status.json).
The goals (issue 32) are printed beside each number: predict of one image and eval of the digits run within
0.8 s of the floor, runs over 200 runs under 0.5 s, --help under 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: Path, reps: int) -> float:
    """The median wall time of `cmd`, which must succeed."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return statistics.median(times)


def prepare(work: Path) -> None:
    """The digits and one trained epoch in `work`, and 200 run directories under work/many/."""
    py = [sys.executable, "-m"]
    subprocess.run([*py, "trainkit.data.digits", "data/digits"], cwd=work, check=True, capture_output=True)
    shutil.copytree(ROOT / "configs", work / "configs", dirs_exist_ok=True)
    subprocess.run([*py, "trainkit", "train", "--config", "configs/digits.yaml", "--set", "train.epochs=1",
                    "--set", "log.report=false", "--overwrite"], cwd=work, check=True, capture_output=True)  # fmt: skip
    for i in range(200):
        run = work / "many" / f"run-{i:03d}"
        run.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "status.json"):
            shutil.copy(work / "runs" / "digits" / name, run / name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-startup-bench")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(args.work)
    image = next((args.work / "data" / "digits" / "val").glob("*/*.png"))
    tk = [sys.executable, "-m", "trainkit"]
    rows = [
        ("floor: import torch, torchvision", [sys.executable, "-c", "import torch, torchvision"], None),
        ("trainkit --help", [*tk, "--help"], ("abs", 0.2)),
        ("trainkit eval (digits)", [*tk, "eval", "--ckpt", "runs/digits/best.pt"], ("floor", 0.8)),
        ("trainkit predict (one image)", [*tk, "predict", "--ckpt", "runs/digits/best.pt", str(image)], ("floor", 0.8)),
        ("trainkit inspect-shapes", [*tk, "inspect-shapes", "--config", "configs/digits.yaml"], None),
        ("trainkit runs (200 runs)", [*tk, "runs", "many"], ("abs", 0.5)),
        ("trainkit models", [*tk, "models"], None),
    ]
    results = {}
    for name, cmd, _ in rows:
        results[name] = timed(cmd, args.work, args.reps)
    floor = results[rows[0][0]]
    for name, _, goal in rows:
        t = results[name]
        verdict = ""
        if goal is not None:
            kind, limit = goal
            over = t - floor if kind == "floor" else t
            verdict = (
                f"goal {'<= floor + ' if kind == 'floor' else '< '}{limit:g} s: {'met' if over <= limit else 'NOT met'}"
            )
        print(f"{name:34s} {t:6.2f} s  (floor {t - floor:+.2f} s)  {verdict}")
    out = ROOT / "benchmarks" / "results" / "startup.json"
    out.write_text(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
