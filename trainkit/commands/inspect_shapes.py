"""`trainkit inspect-shapes`: each layer's input and output shape, or where the model breaks."""

from __future__ import annotations

import argparse

from trainkit.commands.base import Command, add_set, add_trust, say
from trainkit.errors import ConfigError

EXAMPLES = """examples:
  trainkit inspect-shapes --config configs/cifar10.yaml
  trainkit inspect-shapes --config configs/cifar10.yaml --input-size 3 32 32
  trainkit inspect-shapes --ckpt runs/digits/best.pt"""


def inspect_shapes_arguments(p: argparse.ArgumentParser) -> None:
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
    add_trust(p)


def run_inspect_shapes(args: argparse.Namespace) -> int:
    from trainkit.data import build as data
    from trainkit.models import build as models
    from trainkit.models import shapes
    from trainkit.run import config
    from trainkit.trained import load as trained

    if args.ckpt:
        t = trained.load_trained(args.ckpt, args.overrides, device="cpu", trust_code=args.trust_code)
        cfg, model = t.cfg, t.model
    else:
        notes: list[str] = []
        cfg = config.load_config(
            args.config, args.overrides, notes, needs=("model",) if args.input_size else ("data", "model")
        )
        say(notes)
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


COMMAND = Command(
    "show each layer's input and output shape, or where the model breaks",
    EXAMPLES,
    inspect_shapes_arguments,
    run_inspect_shapes,
)
