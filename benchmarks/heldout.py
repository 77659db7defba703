"""Does the CIFAR-10 JPEG test set behave like the training images? Held-out training images against it.

Trains a config on 45,000 of the 50,000 training JPEGs (a seeded 500 per class held out, as symlinks)
and validates on the held-out 5,000; then `trainkit eval` scores the same best.pt on the 10,000 test
JPEGs. If the test images are drawn and stored like the training images, the two accuracies agree
within sampling noise (about +/-0.8 points at 90% for 5,000 images, two standard errors); a larger gap
says the test set itself differs, and no recipe will close it.

    python benchmarks/heldout.py --config configs/cifar10_fast.yaml [--set train.epochs=8 --set device=cpu]

Ends with `heldout_acc=X.XXXX test_acc=Y.YYYY gap=Z.ZZZZ`, and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, TARBALL, unpack

PER_CLASS = 500


def split(train: Path, dest: Path, seed: int) -> tuple[Path, Path]:
    """dest/train (the rest) and dest/heldout (PER_CLASS per class), as symlinks to the training files."""
    rng = random.Random(seed)
    for folder in sorted(p for p in train.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        rng.shuffle(files)
        for part, chosen in (("heldout", files[:PER_CLASS]), ("train", files[PER_CLASS:])):
            (dest / part / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (dest / part / folder.name / f.name).symlink_to(f.resolve())
    return dest / "train", dest / "heldout"


def trainkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "trainkit", *args], cwd=ROOT, check=True, stdout=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "cifar10_fast.yaml")
    p.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE, as trainkit's --set")
    p.add_argument("--seed", type=int, default=0, help="of the held-out choice")
    p.add_argument("--tarball", type=Path, default=TARBALL)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainkit-bench-cifar10")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    data = unpack(args.tarball, args.work)
    tmp = Path(tempfile.mkdtemp(prefix="trainkit-heldout-"))
    train, heldout = split(data / "train", tmp / "split", args.seed)
    sets = [f"data.train={train}", f"data.val={heldout}", "log.progress=lines", "log.visdom.enabled=false", *args.sets]
    trainkit(
        "train", "--config", str(args.config), "--run-dir", str(tmp / "run"), *[a for s in sets for a in ("--set", s)]
    )
    best = tmp / "run" / "best.pt"
    trainkit("eval", "--ckpt", str(best), "--data", str(data / "test"), "--out", str(tmp / "test.json"))
    test = json.loads((tmp / "test.json").read_text())
    records = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    held = next(r for r in records if r["epoch"] == test["epoch"])
    result = {
        "config": str(args.config),
        "sets": args.sets,
        "machine": platform.node(),
        "epoch": test["epoch"],
        "heldout_images": PER_CLASS * len(test["classes"]),
        "heldout_acc": held["val_acc"],
        "test_images": test["samples"],
        "test_acc": test["val_acc"],
        "train_acc": held["train_acc"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"heldout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    print(
        f"heldout_acc={held['val_acc']:.4f} test_acc={test['val_acc']:.4f} gap={held['val_acc'] - test['val_acc']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
