"""The checks before a run starts, each a one-line error: samples of one size, train and val alike, a forward
pass that works and an output of one score per class."""

from __future__ import annotations

from torch import nn

from trainkit.data import build as data
from trainkit.errors import ConfigError
from trainkit.models import shapes
from trainkit.run.config import Config
from trainkit.text import plural


def check_shapes(model: nn.Module, input_shape: tuple[int, ...], classes: int | None = None) -> None:
    """Run `inspect-shapes` before training, so a shape bug costs seconds, not an epoch; the output must have
    one score per class."""
    report = shapes.collect(model, input_shape)
    if report.failure:
        f = report.failure
        fix = f.fix or f.error
        raise ConfigError(
            f"model: the forward pass fails at {f.row.path} ({f.row.type}) on input {list(f.row.input_shape or [])}: "
            f"{fix}; run `trainkit inspect-shapes --config ...` for the table"
        )
    out = report.output_shape
    if classes is not None and out is not None and (len(out) != 2 or out[1] != classes):
        raise ConfigError(
            f"model: its output has shape {list(out)[1:]} per image, and the data has {plural(classes, 'class', 'classes')}: "
            f"give its head {classes} outputs (model.args.num_classes: {classes}, or leave num_classes out where the "
            "source sets it from the data)"
        )


def check_samples(train_shape: tuple[int, ...], val_shape: tuple[int, ...]) -> None:
    """The model sees training and val samples: they must agree in rank and channels (sizes may differ)."""
    if len(train_shape) != len(val_shape) or train_shape[:1] != val_shape[:1]:
        raise ConfigError(
            f"data.transforms: a training sample has shape {list(train_shape)} after data.transforms.train, a val "
            f"sample {list(val_shape)} after data.transforms.val; the model sees both: make the two lists agree "
            "(for example the same Grayscale in both)"
        )


def check_data(cfg: Config, d: data.Data, model: nn.Module) -> None:
    """Samples of one size per set (the cache checks its own), train and val alike in rank and channels, and a
    forward pass that works: each refused in one line, before anything runs."""
    if cfg.data.cache == "none":
        if d.train_set is not None:
            data.check_one_size(d.train_set, "data.transforms.train")
        data.check_one_size(d.val_set, "data.transforms.val")
    check_samples(d.sample_shape, d.input_shape)
    check_shapes(model, d.input_shape, len(d.classes))
