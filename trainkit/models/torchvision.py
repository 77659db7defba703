"""`model.torchvision: NAME` with `model.args`, and `model.pretrained: WEIGHTS`: a torchvision architecture,
from random weights or from its named pretrained weights (torchvision's own weights API)."""

from __future__ import annotations

from typing import Any

from trainkit.errors import ConfigError, key_error
from trainkit.models import spec
from trainkit.models.source import ModelSource, Pretrained
from trainkit.text import suggest


def weights_of(name: str, pretrained: str | bool, path: str) -> Any:
    """torchvision's weights enum member for `model.pretrained` (`DEFAULT`, `IMAGENET1K_V2`, `true`, or the full
    `ResNet50_Weights.IMAGENET1K_V2`); an unknown name lists the model's weights."""
    import torchvision.models

    key = f"{path}.pretrained"
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise key_error(key, f"torchvision has no pretrained weights for {name}; leave model.pretrained out") from None
    names = list(enum.__members__)
    given = "DEFAULT" if pretrained is True else str(pretrained)
    short = given.split(".", 1)[1] if given.startswith(enum.__name__ + ".") else given
    if short not in enum.__members__:
        raise key_error(
            key, f"{name} has no weights {given!r}{suggest(short, names)}; its weights are {', '.join(names)}"
        )
    return enum[short]


def check(cfg: Any, path: str) -> Any:
    spec.check_torchvision(cfg.torchvision, cfg.args, path)
    if cfg.pretrained is None or cfg.pretrained is False:
        return None
    return weights_of(cfg.torchvision, cfg.pretrained, path)


def pretrained(cfg: Any) -> Pretrained | None:
    """What the resolved weights (`cfg.net`) say of themselves."""
    w = cfg.net
    if w is None:
        return None
    t = w.transforms()
    metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return Pretrained(
        name=f"{type(w).__name__}.{w.name}",
        url=w.url,
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=[float(v) for v in t.mean],
        std=[float(v) for v in t.std],
        interpolation=str(t.interpolation.value),
        meta={"top1": metrics.get("acc@1"), "params": w.meta.get("num_params"), "recipe": w.meta.get("recipe")},
        categories=list(w.meta["categories"]) if w.meta.get("categories") else None,
    )


def build_torchvision(cfg: Any, num_classes: int | None) -> Any:
    import torchvision.models

    args = dict(cfg.args)
    if cfg.net is not None and num_classes is not None:  # a new head, of the data's classes
        args.setdefault("num_classes", num_classes)
    try:
        return torchvision.models.get_model(cfg.torchvision, weights=None, **args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.args: torchvision {cfg.torchvision} rejected its arguments: {exc}") from None


SOURCE = ModelSource(
    check=check,
    build=build_torchvision,
    describe=lambda cfg: str(cfg.torchvision) + (f" ({pretrained(cfg).name})" if cfg.net is not None else ""),  # type: ignore[union-attr]
    pretrained=pretrained,
)
