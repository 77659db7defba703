"""What a command is (its parser's arguments, its examples, its function), and the helpers commands share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One `trainkit` subcommand: `cli` builds its parser from these and calls `run` with the parsed args."""

    help: str
    examples: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_set(p: argparse.ArgumentParser, help_: str = "override a config key; the value is YAML (repeatable)") -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_)


def add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import the checkpoint's model.python code (importing it runs it; only for checkpoints you trust)",
    )


def say(notes: list[str]) -> None:
    """Notes about the user's input (not errors), on stderr so that stdout stays the command's output."""
    for note in notes:
        print(f"trainkit: {note}", file=sys.stderr, flush=True)
