"""`trainkit models`: the architectures trainkit can build by name, with their pretrained weights (ImageNet top-1,
input size) and whether each file is in torch's cache. It makes no network call."""

from __future__ import annotations

import argparse
import fnmatch

from trainkit.commands.base import Command
from trainkit.errors import ConfigError

EXAMPLES = """examples:
  trainkit models                       # every torchvision classifier and its weights
  trainkit models 'resnet*' --pretrained
  trainkit models efficientnet_b0

Use one as `model: {torchvision: NAME, pretrained: WEIGHTS}` (WEIGHTS as listed, or DEFAULT)."""


def models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", metavar="PATTERN", help="a name or a glob (default: all)")
    p.add_argument("--source", choices=("torchvision", "timm"), default="torchvision", help="default: torchvision")
    p.add_argument("--pretrained", action="store_true", help="only architectures that have pretrained weights")


def rows(pattern: str, pretrained_only: bool) -> list[tuple[str, ...]]:
    """(model, parameters, weights, ImageNet top-1, input size, cached) per weights; one row with `-` for an
    architecture without any."""
    import torchvision.models

    from trainkit.store.checkpoint import cache_path

    out: list[tuple[str, ...]] = []
    for name in torchvision.models.list_models(module=torchvision.models):
        if not fnmatch.fnmatch(name, pattern):
            continue
        weights = list(torchvision.models.get_model_weights(name))
        if not weights:
            out += [] if pretrained_only else [(name, "-", "-", "-", "-", "-")]
        for w in weights:
            top1 = w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
            crop = getattr(w.transforms(), "crop_size", ["-"])[0]
            cached = "yes" if cache_path(w.url).is_file() else "no"
            params = f"{w.meta['num_params'] / 1e6:.1f}M" if "num_params" in w.meta else "-"
            out.append((name, params, w.name, f"{top1:.1f}%" if top1 else "-", str(crop), cached))
    return out


def table(found: list[tuple[str, ...]]) -> str:
    head = ("model", "params", "weights", "top-1", "input", "cached")
    widths = [max(len(r[i]) for r in [head, *found]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *found])


def run_models(args: argparse.Namespace) -> int:
    if args.source == "timm":
        raise ConfigError("models --source timm: timm models are not supported yet; use --source torchvision")
    found = rows(args.pattern, args.pretrained)
    if not found:
        raise ConfigError(f"models {args.pattern}: no torchvision classifier matches; try a glob such as 'resnet*'")
    print(table(found))
    return 0


COMMAND = Command(
    "list the architectures to build by name, with their pretrained weights", EXAMPLES, models_arguments, run_models
)
