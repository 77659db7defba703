"""What `log.report` adds to a run: `trainkit report` on a finished run's folder, timed in this process (the
imports a `train` has made already are made first, outside the timing).

    .venv/bin/python benchmarks/report_cost.py runs/digits
"""

from __future__ import annotations

import statistics
import sys
import time

import matplotlib
import torch  # noqa: F401  (imported by every train before its report)

from trainkit.trained import report


def main() -> None:
    run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/digits"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: F401  (a first import, outside the timing, as in a long run)

    times = []
    for _ in range(4):  # the first one pays matplotlib's first draw (fonts, caches), as a run's report does
        start = time.perf_counter()
        report.write_report(run_dir)
        times.append(time.perf_counter() - start)
    first, rest = times[0], times[1:]
    print(f"report of {run_dir}: first {first:.2f} s, then median {statistics.median(rest):.2f} s ({len(rest)} more)")


if __name__ == "__main__":
    main()
