"""`trainkit models`: the architectures trainkit can build by name, with their pretrained weights (ImageNet top-1,
input size) and whether each file is in the local cache (torch's, or the Hugging Face one for timm). It makes no
network call."""

from __future__ import annotations

import argparse
import fnmatch

from trainkit.commands.base import Command
from trainkit.errors import ConfigError
from trainkit.text import columns

EXAMPLES = """examples:
  trainkit models                       # every torchvision classifier and its weights
  trainkit models 'resnet*' --pretrained
  trainkit models efficientnet_b0
  trainkit models 'convnext*' --source timm --pretrained

Use one as `model: {torchvision: NAME, pretrained: WEIGHTS}` (WEIGHTS as listed, or DEFAULT), or
`model: {timm: NAME, pretrained: TAG}` (TAG as listed, or true for the model's default)."""

TIMM_PARAMS_UP_TO = 64  # architectures whose parameters are counted (each built on the meta device, ~0.15 s)


def models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", metavar="PATTERN", help="a name or a glob (default: all)")
    p.add_argument("--source", choices=("torchvision", "timm"), default="torchvision", help="default: torchvision")
    p.add_argument("--pretrained", action="store_true", help="only architectures that have pretrained weights")


def rows(pattern: str, pretrained_only: bool) -> list[tuple[str, ...]]:  # torchvision
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


def timm_rows(pattern: str, pretrained_only: bool) -> list[tuple[str, ...]]:
    """The same for timm: the tags of each architecture, their input size and whether the Hugging Face cache
    holds them. timm ships no table of accuracies (top-1 `-`); the parameters are counted on the meta device,
    for up to TIMM_PARAMS_UP_TO architectures."""
    import huggingface_hub
    import torch

    from trainkit.models.timm import _timm, offline

    timm = _timm("models --source timm")
    tags_of: dict[str, list[str]] = {}
    for tag in timm.list_pretrained():
        tags_of.setdefault(tag.split(".", 1)[0], []).append(tag)
    names = [n for n in timm.list_models(pattern) if tags_of.get(n) or not pretrained_only]
    out: list[tuple[str, ...]] = []
    for name in names:
        params = "-"
        if len(names) <= TIMM_PARAMS_UP_TO:
            with torch.device("meta"), offline():
                params = f"{sum(p.numel() for p in timm.create_model(name).parameters()) / 1e6:.1f}M"
        tags = tags_of.get(name, [])
        out += [] if tags else [(name, params, "-", "-", "-", "-")]
        for tag in tags:
            pc = timm.models.get_pretrained_cfg(tag)
            files = [pc.hf_hub_filename] if pc.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            repo = pc.hf_hub_id or ""
            cached = repo and any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f), str) for f in files)
            out.append((name, params, tag.split(".", 1)[1], "-", str(pc.input_size[-1]), "yes" if cached else "no"))
    return out


def table(found: list[tuple[str, ...]]) -> str:
    return columns([("model", "params", "weights", "top-1", "input", "cached"), *found])


def run_models(args: argparse.Namespace) -> int:
    found = (timm_rows if args.source == "timm" else rows)(args.pattern, args.pretrained)
    if not found:
        raise ConfigError(f"models {args.pattern}: no {args.source} classifier matches; try a glob such as 'resnet*'")
    print(table(found))
    if args.source == "timm" and found[0][1] == "-":
        print(f"(parameters are counted for up to {TIMM_PARAMS_UP_TO} architectures: give a narrower pattern)")
    return 0


COMMAND = Command(
    "list the architectures to build by name, with their pretrained weights", EXAMPLES, models_arguments, run_models
)
