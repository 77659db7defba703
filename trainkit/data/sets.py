"""The datasets of a `DataConfig`: the training and the val one, each from its own folder or label file, or val
split off the training data (`data.val_split`); data of some of the classes mapped onto them by name."""

from __future__ import annotations

import copy
from typing import Any

from trainkit.config import specs
from trainkit.data.images import ImageDataset
from trainkit.data.schema import DataConfig
from trainkit.data.split import SplitPlan, apply_split, plan_split
from trainkit.data.transforms import build_transform, val_calls
from trainkit.errors import DataError
from trainkit.text import plural, some, suggest


def open_sets(
    cfg: DataConfig,
    tcalls: list[specs.Call],
    train: bool,
    classes: list[str] | None,
    stored: tuple[dict[str, Any], str] | None,
    notes: list[str],
    val_from: str = "val",
) -> tuple[ImageDataset | None, ImageDataset, SplitPlan | None]:
    """The training dataset (None unless `train`) and the val one: each its own folder or file, or val split
    off the training data (`data.val_split`); with `val_from` "test", the test set alone."""
    if val_from == "test":  # the test set in val's place (evaluated once, at the end of training)
        return None, open_dataset(cfg, "test", build_transform(val_calls(cfg)), classes), None
    if cfg.val is None and cfg.val_split is not None:
        raw, val, plan = split_off(
            cfg, build_transform(tcalls) if train else None, build_transform(val_calls(cfg)), stored, classes
        )
        notes.append(plan.line)
        return raw, val, plan
    raw = open_dataset(cfg, "train", build_transform(tcalls), classes) if train else None
    known = classes if classes is not None or raw is None else list(raw.classes)
    return raw, open_dataset(cfg, "val", build_transform(val_calls(cfg)), known), None


def open_dataset(cfg: DataConfig, split: str, transform: Any, classes: list[str] | None = None) -> ImageDataset:
    """The `split` ('train', 'val' or 'test') dataset; given `classes` (from train or a checkpoint), its own are
    mapped onto them by name."""
    ds: ImageDataset = cfg.kind.open(cfg, split, transform)
    if split == "train" and classes is None and len(ds.classes) < 2:
        found = f"one class, {ds.classes[0]!r}" if ds.classes else "no class"
        raise DataError(
            f"data.{split}: {found}; a classifier needs at least two classes, one sub-folder each, in {cfg.train}"
        )
    if classes is not None and list(ds.classes) != list(classes):
        map_classes(ds, classes, f"data.{split}")
    return ds


def map_classes(ds: ImageDataset, classes: list[str], key: str) -> None:
    """Data that holds some of the classes (a small test set, one class's new photos), mapped by name onto
    `classes` (the training data's or a checkpoint's); a class that is not among them is an error that names it."""
    extra = [c for c in ds.classes if c not in classes]
    if extra:
        raise DataError(
            f"{key}: {plural(len(extra), 'class', 'classes')} not among the training classes: {some(extra)}"
            f"{suggest(extra[0], classes)}; the training classes are {some(classes, 10)}"
        )
    samples = getattr(ds, "samples", None)
    if samples is None:
        raise DataError(f"{key}: its classes differ from the training classes ({some(list(ds.classes))})")
    index = {c: i for i, c in enumerate(classes)}
    to = [index[c] for c in ds.classes]
    ds.samples = [(p, to[t]) for p, t in samples]  # type: ignore[attr-defined]
    if hasattr(ds, "imgs"):
        ds.imgs = ds.samples  # type: ignore[attr-defined]
    ds.targets = [t for _, t in ds.samples]  # type: ignore[attr-defined]
    ds.classes = list(classes)
    if hasattr(ds, "class_to_idx"):
        ds.class_to_idx = index


def split_off(
    cfg: DataConfig, train_tf: Any, val_tf: Any, stored: tuple[dict[str, Any], str] | None, classes: list[str] | None
) -> tuple[ImageDataset | None, ImageDataset, SplitPlan]:
    """`data.val_split`: the training data and the val taken from it (only val when `train_tf` is None), by the
    recorded split (`stored`: split.json and its path) or a new one."""
    full = open_dataset(cfg, "train", train_tf if train_tf is not None else val_tf, classes)
    files, root = full.files() or [], str(getattr(full, "root", cfg.train))
    if stored is not None:
        plan = apply_split(files, root, stored[0], "data.train", stored[1])
    else:
        plan = plan_split(files, list(full.targets), root, cfg.val_split or 0.0, cfg.split_seed, "data.train")
    val = copy.copy(full)
    for attr in ("ignored", "notes"):  # said once, with train's
        if hasattr(val, attr):
            setattr(val, attr, [])
    val.transform = val_tf
    val.keep(plan.val)
    if train_tf is None:
        return None, val, plan
    full.keep(plan.train)
    return full, val, plan
