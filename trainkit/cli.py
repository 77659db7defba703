"""The `trainkit` command: one function per subcommand, failures mapped to exit codes.

Exit codes: 0 success; 2 a user input error (config, arguments, data,
checkpoint), printed as one line; 1 a runtime failure; 130/143 interrupted by
SIGINT/SIGTERM. `--debug` shows the traceback of any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trainkit
from trainkit import model_commands, picture_commands
from trainkit.errors import ConfigError, TrainingError, TrainkitError, one_line

if TYPE_CHECKING:  # the commands import what they need when they run: `trainkit --help` stays fast
    from trainkit.schema import Config

EXAMPLES = {
    "train": """examples:
  trainkit train --config configs/digits.yaml
  trainkit train --config configs/cifar10.yaml --set data.batch_size=64 --set 'optim.betas=[0.9, 0.99]'
  trainkit train --config configs/cifar10.yaml --print-config
  trainkit train --config configs/cifar10.yaml --resume            # continue runs/<name>/last.pt
  trainkit train --config configs/cifar10.yaml --nproc 2           # DDP on 2 processes (torchrun)
  torchrun --nproc_per_node 4 -m trainkit train --config configs/cifar10.yaml""",
    "eval": """examples:
  trainkit eval --ckpt runs/digits/best.pt
  trainkit eval --ckpt runs/cifar10-cnn/best.pt --data data/cifar10/test --out eval-test.json
  trainkit eval --ckpt runs/cifar10-fast/best.pt --tta flip   # average over each image and its mirror""",
    "inspect-shapes": """examples:
  trainkit inspect-shapes --config configs/cifar10.yaml
  trainkit inspect-shapes --config configs/cifar10.yaml --input-size 3 32 32
  trainkit inspect-shapes --ckpt runs/digits/best.pt""",
}


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other error: what, and where the options are."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of any error")
    parser = _Parser(
        prog="trainkit",
        description="Train and evaluate image classifiers from YAML configs.",
        epilog="Run `trainkit COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"trainkit {trainkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, examples: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            parents=[common],
            epilog=examples or EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def add_set(p: argparse.ArgumentParser, help_: str) -> None:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_)

    p = add("train", "train a model from a YAML config")
    p.add_argument("--config", metavar="FILE", help="YAML config (optional with --resume CKPT: its config is used)")
    add_set(p, "override a config key; the value is YAML (repeatable)")
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
    p.set_defaults(func=cmd_train)

    p = add("eval", "evaluate a checkpoint on its validation data")
    p.add_argument("--ckpt", required=True, metavar="FILE", help="a trainkit checkpoint (last.pt or best.pt)")
    p.add_argument("--data", metavar="DIR", help="val folder (imagefolder) or data root (cifar) to evaluate on")
    add_set(p, "override a key of the checkpoint's config (repeatable)")
    p.add_argument("--out", metavar="FILE", help="where to write eval.json (default: beside the checkpoint)")
    p.add_argument(
        "--tta",
        choices=("off", "flip", "flip_translate"),
        help="test-time augmentation (default: the config's eval.tta); the same as --set eval.tta=...",
    )
    p.set_defaults(func=cmd_eval)

    model_commands.register(add)

    p = add("inspect-shapes", "show each layer's input and output shape, or where the model breaks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE", help="build the model of this config")
    src.add_argument("--ckpt", metavar="FILE", help="build the model of this checkpoint")
    add_set(p, "override a config key (repeatable)")
    p.add_argument(
        "--input-size",
        nargs=3,
        type=int,
        metavar=("C", "H", "W"),
        help="input size of one sample (default: the first val sample after its transforms)",
    )
    p.set_defaults(func=cmd_inspect_shapes)

    picture_commands.register(add, add_set)
    return parser


def _train_config(args: argparse.Namespace) -> tuple[Config, dict | None]:
    """The config of a `train` command, and the checkpoint of an explicit `--resume CKPT` (read once)."""
    from trainkit import config, resuming, trained

    ckpt = trained.read_checkpoint(args.resume, resume=True) if args.resume else None
    run_dir = resuming.folder_override(args.resume, args.run_dir)
    overrides = list(args.overrides) + ([f"run_dir={run_dir}"] if run_dir else [])
    overrides += ["log.progress=quiet"] if args.quiet else []
    if args.fast_dev_run is not None:
        from trainkit.smoke import temporary_run_dir

        overrides += ["train.epochs=1"] + ([] if args.run_dir else [f"run_dir={temporary_run_dir()}"])
    notes: list[str] = []
    if args.config:
        cfg = config.load_config(args.config, overrides, notes)
    elif ckpt is not None:
        cfg = trained.checkpoint_config(ckpt, args.resume, overrides, notes=notes)
    else:
        raise ConfigError("train: give --config FILE (or --resume CKPT to continue a run with its own config)")
    moved = resuming.moved_note(ckpt, args.resume, cfg.run_path) if ckpt is not None and not args.run_dir else None
    _say(notes + ([moved] if moved else []))
    return cfg, ckpt


def _say(notes: list[str]) -> None:
    """Notes about the user's input (not errors), on stderr so that stdout stays the command's output."""
    for note in notes:
        print(f"trainkit: {note}", file=sys.stderr, flush=True)


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


def cmd_train(args: argparse.Namespace) -> int:
    from trainkit import config, distributed, engine, launch, resuming, run

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
    _say(notes)
    if point.done:
        print(f"{point.path}: {point.done}; nothing to do (raise train.epochs with --set to train on)")
        return 0
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch.launch(args.nproc, _without_nproc(args.argv))
    if args.fast_dev_run is not None:
        from trainkit.smoke import fast_dev_run

        print(fast_dev_run(cfg, args.fast_dev_run, keep=bool(args.run_dir)))
        return 0
    r = None
    try:
        r = run.build_run(cfg, resume=point.path, overwrite=args.overwrite, ckpt=point.ckpt)
        engine.fit(r)
        if cfg.log.report and r.dist.main:
            picture_commands.write_report(r.run_dir)
    finally:
        distributed.close()
        if r is not None and r.lock is not None:
            r.lock.release()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from trainkit import evaluation, inference

    inference.check_out(args.out, (".json",))  # before the evaluation, not after it
    overrides = tuple(args.overrides) + ((f"eval.tta={args.tta}",) if args.tta else ())
    result = evaluation.eval_checkpoint(args.ckpt, args.data, overrides)
    print(evaluation.format_eval(result))
    out = Path(args.out) if args.out else Path(args.ckpt).with_name("eval.json")
    try:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror}); choose another place") from None
    print(f"\nwrote {out}")
    run_dir = Path(args.ckpt).parent
    if (run_dir / "report.html").is_file():  # refresh a run's report with this evaluation
        picture_commands.write_report(run_dir, args.ckpt, args.data)
    return 0


def cmd_inspect_shapes(args: argparse.Namespace) -> int:
    from trainkit import config, data, models, shapes, trained

    if args.ckpt:
        t = trained.load_trained(args.ckpt, args.overrides, device="cpu")
        cfg, model = t.cfg, t.model
    else:
        notes: list[str] = []
        cfg = config.load_config(
            args.config, args.overrides, notes, needs=("model",) if args.input_size else ("data", "model")
        )
        _say(notes)
        model = models.build_model(cfg.model, seed=cfg.seed)
    if args.input_size:
        if min(args.input_size) < 1:
            raise ConfigError(f"--input-size: expected positive sizes C H W, got {' '.join(map(str, args.input_size))}")
        size = tuple(args.input_size)
    else:
        import torch

        from trainkit.errors import DataError

        try:
            d = data.build_data(cfg.data, cfg.seed, torch.device("cpu"), train=False)
        except DataError as exc:
            raise DataError(f"{exc} (or give --input-size C H W)") from None
        size = d.input_shape
    report = shapes.collect(model, size)
    print(shapes.format_report(report))
    return 1 if report.failure else 0


def main(argv: list[str] | None = None) -> int:
    """Run the trainkit command line; returns the exit code."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank under torchrun: it dies with its launcher
        from trainkit.launch import die_with_parent

        die_with_parent()
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        code = _run(args)
    except BrokenPipeError:  # the reader went away (`trainkit eval ... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # 128 + SIGPIPE
    if "RANK" in os.environ:  # under torchrun: tell the --nproc launcher how this rank ended
        from trainkit.launch import write_status

        write_status(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (TrainkitError, TrainingError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trainkit: error: {one_line(str(exc))}", file=sys.stderr)  # always one line, of bounded length
        return exc.exit_code
    except KeyboardInterrupt:
        print("trainkit: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # a run stopped by SIGINT/SIGTERM: 130 or 143
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
