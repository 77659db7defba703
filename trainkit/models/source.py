"""What a model source is: how its key in the config's `model` section is checked, and how it builds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INTERPOLATION = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # torchvision's codes, as transforms take them


@dataclass(frozen=True)
class Pretrained:
    """Named pretrained weights, as a source resolves `model.pretrained`: where the file comes from, the
    preprocessing they were trained with, and what the checkpoint and the report record of them."""

    name: str  # e.g. ResNet18_Weights.IMAGENET1K_V1
    url: str  # the file; the store finds it in torch's cache (or downloads it)
    resize: int
    crop: int
    mean: list[float]
    std: list[float]
    interpolation: str  # "bilinear", "bicubic", ...
    meta: dict[str, Any]  # top1, params, recipe
    categories: list[str] | None = None  # the class names of the weights' own head (ImageNet's)

    def transforms(self) -> dict[str, list[Any]]:
        """`data.transforms` that match the weights: val their own resize, crop, interpolation, mean and std;
        train a RandomResizedCrop to their crop size, a flip and the same normalize."""
        mode = {} if self.interpolation == "bilinear" else {"interpolation": INTERPOLATION[self.interpolation]}
        normalize = {"Normalize": {"mean": self.mean, "std": self.std}}
        return {
            "train": [
                {"RandomResizedCrop": {"size": self.crop, **mode}},
                "RandomHorizontalFlip",
                "ToTensor",
                normalize,
            ],
            "val": [{"Resize": {"size": self.resize, **mode}}, {"CenterCrop": self.crop}, "ToTensor", normalize],
        }

    def normalize_warning(self, val_calls: list[Any]) -> str | None:
        """The line said at start when the config's own Normalize is not the one these weights were trained with."""
        for call in val_calls:
            if call.name == "Normalize":
                given = {**dict(zip(("mean", "std"), call.args)), **call.kwargs}
                mean, std = [float(v) for v in given.get("mean", [])], [float(v) for v in given.get("std", [])]
                if not (_close(mean, self.mean) and _close(std, self.std)):
                    return (
                        f"warning: data.transforms: Normalize mean {mean}, std {std} differs from what {self.name} "
                        f"was trained with (mean {self.mean}, std {self.std}); leave data.transforms out to use theirs"
                    )
        return None

    def record(self) -> dict[str, Any]:
        """What the checkpoint and the report keep of the weights."""
        return {"name": self.name, "url": self.url, **self.meta}


@dataclass(frozen=True)
class ModelSource:
    """One way to get a model. `check(model_cfg, path)` runs at config time and returns what `build` needs
    (kept as `model_cfg.net`); `build(model_cfg, num_classes)` makes the nn.Module (`num_classes`: the data's,
    for a source whose pretrained head is replaced; None when unknown); `describe(model_cfg)` names it (in the
    report); `pretrained(model_cfg)` resolves `model.pretrained` (None: the source has no named weights);
    `load(model_cfg, num_classes)`, for a source that loads its weights itself (timm), builds the model with
    them and returns it with the line worth saying (None: the store loads the file into what `build` made).
    The source's own key is the `model` field of its name (`model.sequential: [...]`)."""

    check: Callable[[Any, str], Any]
    build: Callable[[Any, int | None], Any]
    describe: Callable[[Any], str]
    pretrained: Callable[[Any], Pretrained | None] | None = None
    load: Callable[[Any, int | None], tuple[Any, str | None]] | None = None


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-3 for x, y in zip(a, b))
