"""`trainkit runs`: the table of run directories; `trainkit compare`: runs side by side, with their curves."""

from __future__ import annotations

import argparse

from trainkit.commands.base import Command
from trainkit.errors import ConfigError
from trainkit.text import suggest

RUNS_EXAMPLES = """examples:
  trainkit runs                          # every run below runs/, newest first
  trainkit runs runs/lr-sweep --sort=-best            # -KEY (after =): descending
  trainkit runs --format csv > runs.csv

--sort KEY sorts ascending, --sort=-KEY descending; KEY is a column (best, val_acc, val_loss, wall_s, started, epoch)
or a config key (optim.lr). Only the config keys in which the listed runs differ are shown."""


def runs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dirs", nargs="*", default=["runs"], metavar="DIR", help="folders to list the runs of (default runs/)"
    )
    p.add_argument(
        "--sort", metavar="KEY", help="sort by a column or config key; --sort=-KEY for descending (default -started)"
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")


def run_runs(args: argparse.Namespace) -> int:
    from trainkit.study import runs

    rows = runs.list_runs(args.dirs)
    if args.sort is not None:
        name = args.sort.lstrip("-")
        known = set(runs.FIELDS) | {k for r in rows for k in r.config}
        if name not in known:
            raise ConfigError(
                f"--sort {args.sort}: no such column or config key{suggest(name, known)}; "
                f"columns: {', '.join(runs.FIELDS)}"
            )
    print(runs.render_runs(runs.sort_rows(rows, args.sort), args.format))
    return 0


RUNS = Command("list the runs below a folder: status, best metric, and the config keys that differ", RUNS_EXAMPLES,
               runs_arguments, run_runs)  # fmt: skip

COMPARE_EXAMPLES = """examples:
  trainkit compare runs/lr-0.01 runs/lr-0.1
  trainkit compare runs/digits-sweep/trial-3 runs/digits-sweep/trial-7 --out runs/compare-3-7"""


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or a checkpoint in one)")
    p.add_argument(
        "--out", metavar="DIR", default="compare", help="where compare.html and compare/*.png go (default ./compare)"
    )


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainkit.study import compare

    if len(args.runs) < 2:
        raise ConfigError("compare: give two or more run directories")
    rows = compare.read_runs(args.runs)
    print(compare.text(rows))
    print(f"wrote {compare.write_compare(rows, Path(args.out))}")
    return 0


COMPARE = Command("compare runs: config differences, metrics at the best and last epoch, overlaid curves",
                  COMPARE_EXAMPLES, compare_arguments, run_compare)  # fmt: skip
