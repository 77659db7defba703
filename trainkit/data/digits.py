"""The embedded demo data: scikit-learn's bundled 8x8 handwritten digits as an ImageFolder tree.

`python -m trainkit.data.digits data/digits` writes `train/` and `val/` folders of PNG
files (one sub-folder per digit) with a seeded 80/20 split. The 1,797 images
ship inside scikit-learn's wheel, so nothing is downloaded. Idempotent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".trainkit-digits-complete"


def write_digits(out: Path, seed: int = 0, val_fraction: float = 0.2) -> tuple[int, int]:
    """Write the tree (once); returns (train, val) image counts."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction))
    split = {"val": order[:n_val], "train": order[n_val:]}
    if (out / MARKER).exists():
        return len(split["train"]), n_val
    for name, indices in split.items():
        for i in indices:
            folder = out / name / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    (out / MARKER).write_text("written by python -m trainkit.data.digits\n")
    return len(split["train"]), n_val


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="data/digits", help="target folder (default: data/digits)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_train, n_val = write_digits(Path(args.out), args.seed)
    print(f"digits: {n_train} train / {n_val} val PNG images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
