"""`trainkit train`: a run from a YAML config (or a checkpoint's), in one process, under DDP, or as a smoke run."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from trainkit.commands import report
from trainkit.commands.base import Command, add_set, add_trust, say
from trainkit.errors import ConfigError

if TYPE_CHECKING:  # a command imports what it needs when it runs: `trainkit --help` stays fast
    from trainkit.run.config import Config

EXAMPLES = """examples:
  trainkit train --config configs/digits.yaml
  trainkit train --config configs/cifar10.yaml --set data.batch_size=64 --set 'optim.betas=[0.9, 0.99]'
  trainkit train --config configs/cifar10.yaml --print-config
  trainkit train --config configs/cifar10.yaml --resume            # continue runs/<name>/last.pt
  trainkit train --config configs/cifar10.yaml --nproc 2           # DDP on 2 processes (torchrun)
  torchrun --nproc_per_node 4 -m trainkit train --config configs/cifar10.yaml"""


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (optional with --resume CKPT: its config is used)")
    add_set(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (default: the run directory's last.pt)",
    )
    p.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace the trainkit files of a non-empty run directory")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only warnings and errors (log.progress: quiet; off keeps epoch lines)",
    )
    p.add_argument(
        "--fast-dev-run",
        nargs="?",
        type=int,
        const=2,
        metavar="N",
        help="a smoke run: N (default 2) training and N val batches of one epoch, a checkpoint saved and loaded "
        "back; writes nothing under runs/ unless --run-dir is given",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train on N processes with DDP, launched by torchrun (data.batch_size is per process)",
    )
    add_trust(p)


def _train_config(args: argparse.Namespace) -> tuple[Config, dict | None]:
    """The config of a `train` command, and the checkpoint of an explicit `--resume CKPT` (read once)."""
    from trainkit.run import config, resuming
    from trainkit.store import checkpoint
    from trainkit.trained import load as trained

    ckpt = checkpoint.read_checkpoint(args.resume, resume=True) if args.resume else None
    run_dir = resuming.folder_override(args.resume, args.run_dir)
    overrides = list(args.overrides) + ([f"run_dir={run_dir}"] if run_dir else [])
    overrides += ["log.progress=quiet"] if args.quiet else []
    if args.fast_dev_run is not None:
        from trainkit.trained.smoke import temporary_run_dir

        overrides += ["train.epochs=1"] + ([] if args.run_dir else [f"run_dir={temporary_run_dir()}"])
    notes: list[str] = []
    if args.config:
        cfg = config.load_config(args.config, overrides, notes)
    elif ckpt is not None:  # the checkpoint's own config: data, not orders (its code runs only if trusted)
        cfg = trained.checkpoint_config(ckpt, args.resume, overrides, notes=notes)
        trained.check_code(cfg, ckpt, args.resume, args.trust_code)
    else:
        raise ConfigError("train: give --config FILE (or --resume CKPT to continue a run with its own config)")
    moved = resuming.moved_note(ckpt, args.resume, cfg.run_path) if ckpt is not None and not args.run_dir else None
    say(notes + ([moved] if moved else []))
    return cfg, ckpt


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def run_train(args: argparse.Namespace) -> int:
    from trainkit.run import build as run
    from trainkit.run import config, distributed, launch, resuming
    from trainkit.run import loop as engine

    if args.nproc < 1:
        raise ConfigError(f"--nproc: expected a positive number of processes, got {args.nproc}")
    if args.nproc > 1:
        launch.check_nproc(args.nproc)
    if args.fast_dev_run is not None:
        if args.fast_dev_run < 1 or args.resume is not None or args.nproc > 1:
            raise ConfigError(
                "--fast-dev-run N: a positive number of batches, in one process, of a new run "
                "(without --resume or --nproc)"
            )
    cfg, ckpt = _train_config(args)
    if args.print_config:
        print(config.dump_config(cfg), end="")
        return 0
    notes: list[str] = []
    point = resuming.resume_point(cfg, args.resume, ckpt, notes)
    say(notes)
    if point.done:
        print(f"{point.path}: {point.done}; nothing to do (raise train.epochs with --set to train on)")
        return 0
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch.launch(args.nproc, _without_nproc(args.argv))
    if args.fast_dev_run is not None:
        from trainkit.trained.smoke import fast_dev_run

        print(fast_dev_run(cfg, args.fast_dev_run, keep=bool(args.run_dir)))
        return 0
    r = None
    try:
        r = run.build_run(cfg, resume=point.path, overwrite=args.overwrite, ckpt=point.ckpt)
        engine.fit(r)
        if cfg.data.has_test and r.dist.main:  # once, at the end, with best.pt: never for choosing it
            from trainkit.trained.evaluate import evaluate_test

            print(evaluate_test(r.run_dir), flush=True)
        if cfg.log.report and r.dist.main:
            report.write_and_say(r.run_dir, trust_code=True)  # its own run: the config the user gave
        if r.dist.main:
            from trainkit.sinks import table as sinks_table

            sinks_table.finish_run(cfg.log, r.run_dir)
    finally:
        distributed.close()
        if r is not None and r.lock is not None:
            r.lock.release()
    return 0


COMMAND = Command("train a model from a YAML config", EXAMPLES, train_arguments, run_train)
