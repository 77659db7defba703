"""`trainkit lr-find`: the learning-rate range test, and which optim.lr (or scheduler.max_lr) to train with."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainkit.commands.base import Command, add_set, say
from trainkit.errors import ConfigError

EXAMPLES = """examples:
  trainkit lr-find --config configs/digits.yaml
  trainkit lr-find --config configs/flowers.yaml --steps 200 --out runs/flowers-lr

It trains a copy of the run for --steps batches and saves no weights: the next
`trainkit train` starts from the same weights and data order."""


def lr_find_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="the YAML config of the run to tune")
    add_set(p, "override a config key (repeatable)")
    p.add_argument("--start", type=float, default=1e-7, help="the first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="the last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches, the lr growing exponentially (default 100)")
    p.add_argument(
        "--out", metavar="DIR", help="where to write lr_find.csv and lr_find.png (default: runs/<name>-lr-find)"
    )


def run_lr_find(args: argparse.Namespace) -> int:
    from trainkit.config.train import SCHEDULER_RATES
    from trainkit.run import config, lr_find

    notes: list[str] = []
    cfg = config.load_config(args.config, args.overrides, notes)
    say(notes)
    out = Path(args.out) if args.out else cfg.run_path.with_name(f"{cfg.name}-lr-find")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"lr-find --out {out}: is a file; --out names a folder (for lr_find.csv and lr_find.png)")
    result = lr_find.range_test(cfg, args.start, args.end, args.steps)
    try:
        table, figure = lr_find.write(result, out)
    except OSError as exc:
        raise ConfigError(f"lr-find --out {out}: cannot write there ({exc.strerror}); choose another folder") from None
    end = f"stopped at lr {result.lrs[-1]:.3g}: the loss diverged" if result.stopped_early else "reached --end"
    print(f"{len(result.lrs)} steps from lr {args.start:g}, {end}; wrote {table} and {figure}")
    if result.suggestion is None:
        drop = lr_find.fall(result.smoothed)
        if drop < lr_find.CLEAR_FALL and not result.stopped_early:
            print(
                f"no learning rate stands out: the smoothed loss fell by only {drop:.0%} over the range (a clear "
                f"fall is {lr_find.CLEAR_FALL:.0%}); look at the curve in {figure}, or widen --start/--end"
            )
        else:
            print("no suggestion: too few steps before the loss diverged; lower --start or raise --steps")
        return 1
    # under OneCycleLR or CyclicLR the schedule's peak sets the rate, not optim.lr
    key = "scheduler.max_lr" if cfg.scheduler is not None and cfg.scheduler.type in SCHEDULER_RATES else "optim.lr"
    print(f"suggested learning rate: {result.suggestion:.3g} (the steepest descent of the smoothed loss)")
    print(f"use it: trainkit train --config {args.config} --set {key}={result.suggestion:.3g}")
    return 0


COMMAND = Command(
    "the learning-rate range test: which optim.lr to train with", EXAMPLES, lr_find_arguments, run_lr_find
)
