"""Time to a target val accuracy from a run's metrics.jsonl (training time only, as airbench counts it).

python benchmarks/time_to_acc.py runs/cifar10-fast/metrics.jsonl 0.94
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    path, target = Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.94
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train_s = 0.0
    for r in records:
        train_s += r["time"]
        if r.get("val_acc", 0.0) >= target:
            print(
                f"reached val_acc {r['val_acc']:.4f} >= {target} at epoch {r['epoch']} after {train_s:.1f}s of training"
            )
            return 0
    best = max((r.get("val_acc", 0.0) for r in records), default=0.0)
    print(f"did not reach {target}: best val_acc {best:.4f} in {len(records)} epochs, {train_s:.1f}s of training")
    return 1


if __name__ == "__main__":
    sys.exit(main())
