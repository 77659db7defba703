"""The `trainkit` command: argparse built from one table of commands, failures mapped to exit codes.

Exit codes: 0 success; 2 a user input error (config, arguments, data,
checkpoint), printed as one line; 1 a runtime failure; 130/143 interrupted by
SIGINT/SIGTERM. `--debug` shows the traceback of any error.

A command is one module in `commands/` (its arguments, examples and function: a `Command`) and one line
in `COMMANDS`. The command modules import what they need when they run: `trainkit --help` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from typing import NoReturn

import trainkit
from trainkit.commands import evaluate, inspect_shapes, lr_find, models, predict, report, runs, sweep, train, visdom
from trainkit.commands.base import Command
from trainkit.errors import TrainingError, TrainkitError
from trainkit.text import one_line

COMMANDS: dict[str, Command] = {  # in the order `trainkit --help` lists them
    "train": train.COMMAND,
    "eval": evaluate.COMMAND,
    "predict": predict.PREDICT,
    "features": predict.FEATURES,
    "export": predict.EXPORT,
    "inspect-shapes": inspect_shapes.COMMAND,
    "models": models.COMMAND,
    "visdom": visdom.SERVER,
    "lr-find": lr_find.COMMAND,
    "report": report.COMMAND,
    "runs": runs.RUNS,
    "compare": runs.COMPARE,
    "sweep": sweep.COMMAND,
    "plot": visdom.PLOT,
}


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other error: what, and where the options are."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(commands: dict[str, Command] = COMMANDS) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of any error")
    parser = _Parser(
        prog="trainkit",
        description="Train and evaluate image classifiers from YAML configs.",
        epilog="Run `trainkit COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"trainkit {trainkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        command.arguments(
            sub.add_parser(
                name,
                help=command.help,
                description=command.help,
                parents=[common],
                epilog=command.examples,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the trainkit command line; returns the exit code."""
    parser = build_parser()
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank under torchrun: it dies with its launcher
        from trainkit.run.launch import die_with_parent

        die_with_parent()
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        code = _run(args)
    except BrokenPipeError:  # the reader went away (`trainkit eval ... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # 128 + SIGPIPE
    if "RANK" in os.environ:  # under torchrun: tell the --nproc launcher how this rank ended
        from trainkit.run.launch import write_status

        write_status(code)
    if from_command_line:
        # The interpreter's last collection at exit sweeps every object torch's import left (about 335,000:
        # 1.2 s here); frozen, they are skipped (0.3 s). The process ends next, so nothing is kept longer.
        gc.freeze()
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command].run(args)
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
