"""The commands about a run's pictures: `visdom` (the server), `plot` (replay into it), `report` (an HTML
page) and `lr-find` (the learning-rate range test)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from trainkit.errors import ConfigError

EXAMPLES = {
    "visdom": """examples:
  trainkit visdom                      # http://127.0.0.1:8097, loopback only
  trainkit visdom --port 8098 --env-path runs/visdom
  VISDOM_USERNAME=me VISDOM_PASSWORD=secret trainkit visdom --host 0.0.0.0
  trainkit visdom --login              # asks for the username and password

With VISDOM_USERNAME and VISDOM_PASSWORD set (or --login), every page and
socket needs that login; training runs started with the same two variables log
in with them. --host 0.0.0.0 needs a login (or --no-login). Requests from other
web sites (a foreign Origin or Referer) are refused.""",
    "lr-find": """examples:
  trainkit lr-find --config configs/digits.yaml
  trainkit lr-find --config configs/flowers.yaml --steps 200 --out runs/flowers-lr

It trains a copy of the run for --steps batches and saves no weights: the next
`trainkit train` starts from the same weights and data order.""",
    "report": """examples:
  trainkit report runs/flowers          # runs/flowers/report.html, opens offline in any browser
  trainkit report runs/flowers --ckpt runs/flowers/last.pt --data data/flowers/test""",
    "plot": """examples:
  trainkit plot runs/digits            # into the run's env on the run's server
  trainkit plot runs/digits --env digits-replay --port 8098""",
}


def register(
    add: Callable[..., argparse.ArgumentParser], add_set: Callable[[argparse.ArgumentParser, str], None]
) -> None:
    """Add the four commands to the CLI."""
    p = add("visdom", "start a visdom server for live plots", EXAMPLES["visdom"])
    p.add_argument("--port", type=int, default=8097, help="port (default: 8097; 0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--env-path", metavar="DIR", help="where visdom saves its envs (default: ~/.visdom)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--login", action="store_true", help="ask for a username and password the server requires")
    who.add_argument(
        "--no-login", action="store_true", help="no login even on --host 0.0.0.0: anyone who reaches the port can plot"
    )
    p.set_defaults(func=cmd_visdom)

    p = add("lr-find", "the learning-rate range test: which optim.lr to train with", EXAMPLES["lr-find"])
    p.add_argument("--config", required=True, metavar="FILE", help="the YAML config of the run to tune")
    add_set(p, "override a config key (repeatable)")
    p.add_argument("--start", type=float, default=1e-7, help="the first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="the last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches, the lr growing exponentially (default 100)")
    p.add_argument(
        "--out", metavar="DIR", help="where to write lr_find.csv and lr_find.png (default: runs/<name>-lr-find)"
    )
    p.set_defaults(func=cmd_lr_find)

    p = add(
        "report",
        "write RUN_DIR/report.html: curves, confusion matrix, most-confused images, config",
        EXAMPLES["report"],
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (trainkit train wrote it)")
    p.add_argument("--ckpt", metavar="FILE", help="the checkpoint to show (default: RUN_DIR/best.pt)")
    p.add_argument("--data", metavar="DIR", help="val folder (imagefolder) or data root (cifar) to show it on")
    p.set_defaults(func=cmd_report)

    p = add("plot", "replay a finished run's metrics.jsonl into visdom", EXAMPLES["plot"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds config.yaml and metrics.jsonl)")
    p.add_argument("--env", help="visdom env (default: the run's log.visdom.env, else its run directory's name)")
    p.add_argument("--server", help="visdom server (default: the run's log.visdom.server)")
    p.add_argument("--port", type=int, help="visdom port (default: the run's log.visdom.port)")
    p.set_defaults(func=cmd_plot)


def cmd_lr_find(args: argparse.Namespace) -> int:
    from trainkit import config, lr_find
    from trainkit.schema import SCHEDULER_RATES

    notes: list[str] = []
    cfg = config.load_config(args.config, args.overrides, notes)
    for note in notes:
        print(note, file=sys.stderr)
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


def cmd_report(args: argparse.Namespace) -> int:
    write_report(Path(args.run_dir), args.ckpt, args.data)
    return 0


def write_report(run_dir: Path, ckpt: str | None = None, data_dir: str | None = None) -> None:
    from trainkit import report

    print(f"wrote {report.write_report(run_dir, ckpt, data_dir)} (and its figures in {run_dir / 'report'})")


def cmd_visdom(args: argparse.Namespace) -> int:
    from trainkit import visdom_assets

    if visdom_assets.missing(visdom_assets.static_dir()):
        raise ConfigError(
            "visdom: its web assets are not installed, and it cannot fetch them offline; "
            "run `make install` or `python -m trainkit.visdom_assets`"
        )
    from trainkit import visdom_server

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"visdom --port {args.port}: a TCP port is from 1 to 65535 (or 0 for a free one)")
    login = None if args.no_login else visdom_server.credentials(prompt=args.login)
    warning = visdom_server.check_exposure(args.host, login is not None, args.no_login)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        visdom_server.serve(args.port, args.host, args.env_path, login)
    except KeyboardInterrupt:
        print("visdom stopped", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from trainkit import config, plots
    from trainkit.rundir import load_run

    run = load_run(Path(args.run_dir))
    cfg = config.load_config(run.run_dir / "config.yaml")
    vis = dataclasses.replace(
        cfg.log.visdom, server=args.server or cfg.log.visdom.server, port=args.port or cfg.log.visdom.port
    )
    env = args.env or cfg.visdom_env
    sent = plots.replay(run, vis, env)
    print(f"sent {', '.join(sent)} of {run.run_dir} to {vis.server}:{vis.port}/env/{env}")
    return 0
