"""What `trainkit sweep` costs and saves, on real CIFAR-10 JPEGs, in one run:

1. trials per hour with `--jobs 2` against `--jobs 1` (8 trials each, no pruning: the same work per trial);
2. the median pruner against none, on one 16-trial study each: the epochs spent and the best accuracy reached.

Each study is a real `trainkit sweep` command on a 3,000-image train subset (300 per class) and a 1,000-image
val subset of CIFAR-10's test folder, a small CNN for 4 epochs. Results: printed, and written to
benchmarks/results/sweep.json.

    .venv/bin/python benchmarks/sweep_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import TARBALL, unpack  # noqa: E402

SPACE = {
    "optim.lr": {"loguniform": [1.0e-3, 1.0]},
    "optim.weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
    "train.loss.label_smoothing": {"uniform": [0.0, 0.2]},
}


def subset(src: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` files of each class, as symbolic links (an ImageFolder tree)."""
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        out = dest / folder.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.iterdir())[:per_class]:
            (out / f.name).symlink_to(f)
    return dest


def base_config(work: Path, epochs: int) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())
    cfg["name"], cfg["run_dir"] = "cifar-small", str(work / "runs" / "cifar-small")
    cfg["data"].update(train=str(work / "train"), val=str(work / "val"), num_workers=0, cache="memory", batch_size=64)
    cfg["scheduler"] = {"type": "CosineAnnealingLR", "T_max": epochs}
    cfg["train"]["epochs"] = epochs
    cfg["log"] = {"visdom": {"enabled": False}, "report": False, "progress": "off"}
    path = work / "base.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def sweep(work: Path, base: Path, space: Path, study: str, trials: int, jobs: int, pruner: str) -> dict:
    cmd = [sys.executable, "-m", "trainkit", "sweep", "--config", str(base), "--space", str(space), "--trials",
           str(trials), "--jobs", str(jobs), "--pruner", pruner, "--study", study]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(3 - jobs)}
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    folder = work / "runs" / study
    runs = sorted(folder.glob("trial-*"))
    epochs = sum(len((r / "metrics.jsonl").read_text().splitlines()) for r in runs)
    best = max(
        max(json.loads(line)["val_acc"] for line in (r / "metrics.jsonl").read_text().splitlines()) for r in runs
    )
    states = [json.loads((r / "status.json").read_text()).get("reason", "finished") for r in runs]
    return {"study": study, "trials": len(runs), "jobs": jobs, "pruner": pruner, "wall_s": round(wall, 1),
            "trials_per_hour": round(len(runs) / wall * 3600, 1), "epochs_spent": epochs, "best_val_acc": best,
            "pruned": states.count("pruned")}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-sweep-bench")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep.json")
    args = p.parse_args()
    shutil.rmtree(args.work / "runs", ignore_errors=True)
    data = unpack(TARBALL, args.work / "cifar")
    if not (args.work / "train").exists():
        subset(data / "train", args.work / "train", 300)
        subset(data / "test", args.work / "val", 100)
    base = base_config(args.work, args.epochs)
    space = args.work / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    results = [
        sweep(args.work, base, space, "jobs1", 8, 1, "none"),
        sweep(args.work, base, space, "jobs2", 8, 2, "none"),
        sweep(args.work, base, space, "median", 16, 2, "median"),
        sweep(args.work, base, space, "nopruner", 16, 2, "none"),
    ]
    for r in results:
        print(json.dumps(r))
    j1, j2, med, none = results
    print(f"jobs_speedup={j2['trials_per_hour'] / j1['trials_per_hour']:.2f} "
          f"({j1['trials_per_hour']:.0f} -> {j2['trials_per_hour']:.0f} trials/hour)")  # fmt: skip
    print(f"median_pruner: {med['epochs_spent']} epochs ({med['pruned']} pruned), best {100 * med['best_val_acc']:.2f}%; "
          f"none: {none['epochs_spent']} epochs, best {100 * none['best_val_acc']:.2f}%")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
