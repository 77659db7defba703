"""The photo cache learns as well as the per-sample path (issue 19): configs/bench_flowers.yaml, 10 epochs at
128 px on the flowers photos, `data.cache: memory` with `cache_size: 160` against `data.cache: none`, two
seeds each; best val accuracy and seconds per run.

    python benchmarks/photo_equivalence.py [--epochs 10] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench import unpack  # noqa: E402

TARBALL = ROOT.parent / "shared" / "data" / "flowers-photos.tar.gz"
DEST = Path("/tmp/trainkit-bench-flowers")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    flowers = unpack(TARBALL, DEST) / "flowers"
    results = []
    for seed in args.seeds:
        for path, sets in (("cached", ["data.cache=memory"]), ("per-sample", ["data.cache=none"])):
            run_dir = DEST / f"equiv-{path}-{seed}"
            overrides = [f"data.train={flowers / 'train'}", f"data.val={flowers / 'val'}", f"seed={seed}",
                         f"train.epochs={args.epochs}", "log.progress=lines", *sets]  # fmt: skip
            cmd = [sys.executable, "-m", "trainkit", "train", "--config", str(ROOT / "configs" / "bench_flowers.yaml"),
                   "--run-dir", str(run_dir), "--overwrite", *[a for o in overrides for a in ("--set", o)]]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            best = max(r["val_acc"] for r in records)
            results.append({"path": path, "seed": seed, "best_val_acc": best, "last_val_acc": records[-1]["val_acc"],
                            "seconds": seconds})  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
    out = ROOT / "benchmarks" / "results" / f"photo-equivalence-cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
