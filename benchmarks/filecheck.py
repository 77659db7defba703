"""The cost of trainkit's check of every image file at start (issue 15): seconds per 10,000 files.

    python benchmarks/filecheck.py            # the 50,000 CIFAR-10 training JPEGs (unpacked once to /tmp)

It times `trainkit.filecheck.find_bad_files` over every file of the tree (warm page cache: the second of
two passes, as on any run after the first), and checks that no real JPEG is called bad.
"""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.data.filecheck import find_bad_files  # noqa: E402

TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DEST = Path("/tmp/trainkit-bench-cifar10")


def main() -> None:
    if not (DEST / ".complete").exists():
        DEST.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(DEST, filter="data")
        (DEST / ".complete").write_text(str(TARBALL))
    paths = sorted(str(p) for p in (DEST / "train").glob("*/*.jpg"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        bad = find_bad_files(paths)
        times.append(time.perf_counter() - start)
    per_10k = min(times[1:]) / len(paths) * 10_000
    result = {"files": len(paths), "seconds": times, "seconds_per_10k": per_10k, "bad": len(bad)}
    print(json.dumps(result, indent=2))
    print(f"filecheck: {len(paths)} files, {per_10k:.2f} s per 10,000 files (goal <= 3), {len(bad)} called bad")
    if bad:
        raise SystemExit(f"real JPEGs called bad: {bad[:3]}")


if __name__ == "__main__":
    main()
