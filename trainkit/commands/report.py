"""`trainkit report RUN_DIR`: the run's report.html (also written at the end of `train`, refreshed by `eval`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainkit.commands.base import Command, add_trust

EXAMPLES = """examples:
  trainkit report runs/flowers          # runs/flowers/report.html, opens offline in any browser
  trainkit report runs/flowers --ckpt runs/flowers/last.pt --data data/flowers/test"""


def report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (trainkit train wrote it)")
    p.add_argument("--ckpt", metavar="FILE", help="the checkpoint to show (default: RUN_DIR/best.pt)")
    p.add_argument("--data", metavar="DIR", help="val folder (imagefolder) or data root (cifar) to show it on")
    add_trust(p)


def run_report(args: argparse.Namespace) -> int:
    write_and_say(Path(args.run_dir), args.ckpt, args.data, args.trust_code)
    return 0


def write_and_say(
    run_dir: Path, ckpt: str | None = None, data_dir: str | None = None, trust_code: bool = False
) -> None:
    from trainkit.trained import report

    page = report.write_report(run_dir, ckpt, data_dir, trust_code)
    print(f"wrote {page} (and its figures in {run_dir / 'report'})")


COMMAND = Command(
    "write RUN_DIR/report.html: curves, confusion matrix, most-confused images, config",
    EXAMPLES,
    report_arguments,
    run_report,
)
