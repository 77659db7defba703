"""`trainkit visdom` (a server for live plots, offline and behind a login) and `trainkit plot` (a finished
run's metrics replayed into it)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from trainkit.commands.base import Command
from trainkit.errors import ConfigError

SERVER_EXAMPLES = """examples:
  trainkit visdom                      # http://127.0.0.1:8097, loopback only
  trainkit visdom --port 8098 --env-path runs/visdom
  VISDOM_USERNAME=me VISDOM_PASSWORD=secret trainkit visdom --host 0.0.0.0
  trainkit visdom --login              # asks for the username and password

With VISDOM_USERNAME and VISDOM_PASSWORD set (or --login), every page and
socket needs that login; training runs started with the same two variables log
in with them. --host 0.0.0.0 needs a login (or --no-login). Requests from other
web sites (a foreign Origin or Referer) are refused."""

PLOT_EXAMPLES = """examples:
  trainkit plot runs/digits            # into the run's env on the run's server
  trainkit plot runs/digits --env digits-replay --port 8098"""


def server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8097, help="port (default: 8097; 0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--env-path", metavar="DIR", help="where visdom saves its envs (default: ~/.visdom)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--login", action="store_true", help="ask for a username and password the server requires")
    who.add_argument(
        "--no-login", action="store_true", help="no login even on --host 0.0.0.0: anyone who reaches the port can plot"
    )


def plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds config.yaml and metrics.jsonl)")
    p.add_argument("--env", help="visdom env (default: the run's log.visdom.env, else its run directory's name)")
    p.add_argument("--server", help="visdom server (default: the run's log.visdom.server)")
    p.add_argument("--port", type=int, help="visdom port (default: the run's log.visdom.port)")


def run_server(args: argparse.Namespace) -> int:
    from trainkit.sinks import visdom_assets

    if visdom_assets.missing(visdom_assets.static_dir()):
        raise ConfigError(
            "visdom: its web assets are not installed, and it cannot fetch them offline; "
            "run `make install` or `python -m trainkit.visdom_assets`"
        )
    from trainkit.sinks import visdom_server

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


def run_plot(args: argparse.Namespace) -> int:
    from trainkit.run import config
    from trainkit.sinks import visdom as plots
    from trainkit.store.rundir import load_run

    run = load_run(Path(args.run_dir))
    cfg = config.load_config(run.run_dir / "config.yaml")
    vis = dataclasses.replace(
        cfg.log.visdom, server=args.server or cfg.log.visdom.server, port=args.port or cfg.log.visdom.port
    )
    env = args.env or cfg.visdom_env
    sent = plots.replay(run, vis, env)
    print(f"sent {', '.join(sent)} of {run.run_dir} to {vis.server}:{vis.port}/env/{env}")
    return 0


SERVER = Command("start a visdom server for live plots", SERVER_EXAMPLES, server_arguments, run_server)
PLOT = Command("replay a finished run's metrics.jsonl into visdom", PLOT_EXAMPLES, plot_arguments, run_plot)
