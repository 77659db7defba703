"""`trainkit sweep`: N trials of a base config over a space file, on Optuna (study.sweep); the table of trials,
best.yaml and sweep.html at the end."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from trainkit.commands.base import Command, add_set, say
from trainkit.errors import ConfigError

EXAMPLES = """examples:
  trainkit sweep --config configs/digits.yaml --space configs/spaces/digits.yaml --trials 16
  trainkit sweep --config configs/digits.yaml --space configs/spaces/digits.yaml --trials 16 --jobs 2
  trainkit sweep --config base.yaml --space space.yaml --trials 64 --study lr \\
      --storage postgresql://user:pass@db-host/optuna      # the same command on every machine

The space file maps config keys (as --set names them) to distributions: uniform, loguniform, int, logint
([low, high]) or choice ([a, b, ...]). Trials are runs in runs/<study>/trial-<n>/; run the same command again
to continue a stopped sweep. At the end: the table of trials, runs/<study>/best.yaml and sweep.html."""


def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", required=True, help="the base config of every trial")
    p.add_argument("--space", metavar="FILE", required=True, help="YAML: config keys mapped to distributions")
    p.add_argument(
        "--trials", type=int, required=True, metavar="N", help="finished (complete or pruned) trials to reach"
    )
    p.add_argument(
        "--study", metavar="NAME", help="the study's name (default <config name>-sweep); its folder is runs/NAME"
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna RDB storage, e.g. postgresql://... (default: a journal file in the study's folder)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="K", help="trials at once on this machine, each its own process"
    )
    p.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="stop hopeless trials early (default median)",
    )
    p.add_argument(
        "--sampler", choices=("tpe", "random", "grid"), default="tpe", help="how trials are drawn (default tpe)"
    )
    add_set(p, "override a key of the base config, before the space's (repeatable)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # a worker started by --jobs


def _sweep(args: argparse.Namespace):
    from trainkit.run.config import load_config
    from trainkit.study import space as spaces
    from trainkit.study.sweep import Sweep

    if args.trials < 1:
        raise ConfigError(f"--trials: expected a positive number of trials, got {args.trials}")
    cores = len(os.sched_getaffinity(0))
    if not 1 <= args.jobs <= cores:
        raise ConfigError(f"--jobs {args.jobs}: from 1 to this machine's {cores} CPU cores (one process per trial)")
    notes: list[str] = []
    cfg = load_config(args.config, args.overrides, notes)
    say(notes)
    study = args.study or f"{cfg.name}-sweep"
    if not all(c.isalnum() or c in "._-" for c in study):
        raise ConfigError(f"--study {study!r}: use letters, digits, '.', '_' and '-' only (it names a folder)")
    space = spaces.read_space(args.space)
    if args.sampler == "grid":
        spaces.grid(space)
    spaces.check_space(args.config, list(args.overrides), space)
    sw = Sweep(
        base=args.config,
        overrides=list(args.overrides),
        space=space,
        trials=args.trials,
        study=study,
        folder=cfg.run_path.parent / study,
        storage=args.storage,
        jobs=args.jobs,
        pruner=args.pruner,
        sampler=args.sampler,
        cfg=cfg,
    )
    if args.jobs > 1 or args.worker is not None:
        sw.trial_overrides.append("log.progress=quiet")
        if cfg.threads == "auto":
            sw.trial_overrides.append(f"threads={max(1, cores // max(args.jobs, 1))}")
    return sw


def _workers(args: argparse.Namespace, jobs: int) -> int:
    """Start `jobs` workers (each this command as --worker I, in a session of its own) and wait for them; a
    signal to this process goes to each, which stops its trial at a checkpoint."""
    base = [sys.executable, "-m", "trainkit", *_without(args.argv, "--jobs")]
    cores = len(os.sched_getaffinity(0))
    gpus = _gpus()
    procs = []
    for i in range(jobs):
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // jobs)))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(
            subprocess.Popen([*base, "--jobs", str(jobs), "--worker", str(i)], env=env, start_new_session=True)
        )
    got: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        got.append(sig)
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        return 128 + got[0]
    return next((c for c in codes if c), 0)


def _without(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_sweep(args: argparse.Namespace) -> int:
    from trainkit.study import summary, sweep

    sw = _sweep(args)
    if args.worker is not None:
        from trainkit.run.launch import die_with_parent

        die_with_parent()
        if sw.cfg.log.mlflow.enabled:  # the parent's id, which the starting command put in the study
            sweep.mlflow_parent(sw, sweep.open_study(sw, args.worker))
        sweep.work(sw, args.worker)
        return 0
    study = sweep.open_study(sw, create=True)
    sweep.mlflow_parent(sw, study)
    sw.folder.mkdir(parents=True, exist_ok=True)
    sweep.write_marker(sw)
    print(f"study {sw.study}: {sw.trials} trials in {sw.folder} ({sw.where}), {sw.jobs} at once", flush=True)
    if sw.jobs > 1:
        code = _workers(args, sw.jobs)
        if code:
            return code
    else:
        sweep.work(sw)
    table = summary.trial_table(sw, study)
    print(table)
    best = summary.best_trial(study)
    if best is not None:
        out = summary.write_best(sw, best)
        print(f"best: trial {best.number}, {sw.cfg.train.monitor} {best.value:.4f}; its config: {out}")
    print(f"wrote {summary.write_pictures(sw, study, table)}")
    if sw.cfg.log.mlflow.enabled:
        from trainkit.sinks import mlflow

        mlflow.end_parent(sw.cfg.log, study.user_attrs["mlflow_parent"])
    return 0


COMMAND = Command("search a config's space with Optuna: trials as runs, pruning, many processes or machines",
                  EXAMPLES, sweep_arguments, run_sweep)  # fmt: skip
