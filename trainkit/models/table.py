"""The table of model sources: the `model` key that names each, and its module. A new source is one module and
one line here (and its key, a field of `models.schema.ModelConfig`)."""

from __future__ import annotations

from trainkit.models import moduledict, python, sequential, timm, torchvision
from trainkit.models.source import ModelSource

SOURCES: dict[str, ModelSource] = {
    "sequential": sequential.SOURCE,
    "moduledict": moduledict.SOURCE,
    "torchvision": torchvision.SOURCE,
    "timm": timm.SOURCE,
    "python": python.SOURCE,
}
