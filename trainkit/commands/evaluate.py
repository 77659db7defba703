"""`trainkit eval`: a checkpoint on its validation data (or other data), as training evaluated it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainkit.commands import report
from trainkit.commands.base import Command, add_set, add_trust
from trainkit.errors import ConfigError

EXAMPLES = """examples:
  trainkit eval --ckpt runs/digits/best.pt
  trainkit eval --ckpt runs/cifar10-cnn/best.pt --data data/cifar10/test --out eval-test.json
  trainkit eval --ckpt runs/cifar10-fast/best.pt --tta flip   # average over each image and its mirror"""


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, metavar="FILE", help="a trainkit checkpoint (last.pt or best.pt)")
    p.add_argument("--data", metavar="DIR", help="val folder (imagefolder) or data root (cifar) to evaluate on")
    add_set(p, "override a key of the checkpoint's config (repeatable)")
    p.add_argument("--out", metavar="FILE", help="where to write eval.json (default: beside the checkpoint)")
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="also log eval.json (and the refreshed report) to the run's MLflow run, the one RUN_DIR/mlflow.json names",
    )
    p.add_argument(
        "--tta",
        choices=("off", "flip", "flip_translate"),
        help="test-time augmentation (default: the config's eval.tta); the same as --set eval.tta=...",
    )
    add_trust(p)


def run_eval(args: argparse.Namespace) -> int:
    from trainkit.store.files import write_text_atomic
    from trainkit.trained import evaluate
    from trainkit.trained import predict as inference

    inference.check_out(args.out, (".json",))  # before the evaluation, not after it
    overrides = tuple(args.overrides) + ((f"eval.tta={args.tta}",) if args.tta else ())
    result = evaluate.eval_checkpoint(args.ckpt, args.data, overrides, trust_code=args.trust_code)
    print(evaluate.format_eval(result))
    out = Path(args.out) if args.out else Path(args.ckpt).with_name("eval.json")
    try:
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror}); choose another place") from None
    print(f"\nwrote {out}")
    run_dir = Path(args.ckpt).parent
    if (run_dir / "report.html").is_file():  # refresh a run's report with this evaluation
        report.write_and_say(run_dir, args.ckpt, args.data, trust_code=args.trust_code)
    if args.mlflow:  # asked for here: a checkpoint's config does not choose where eval sends anything
        from trainkit.sinks import mlflow

        print(mlflow.log_files(run_dir))
    return 0


COMMAND = Command("evaluate a checkpoint on its validation data", EXAMPLES, eval_arguments, run_eval)
