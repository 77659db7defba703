"""Loading a trained run from its checkpoint alone: the one path for `eval`, `inspect-shapes --ckpt`,
`train --resume` (and the commands that use a trained model).

`store.checkpoint.read_checkpoint` reads and checks the file; `checkpoint_config` applies `--data` and `--set` to the
stored config and validates it once; `load_trained` also builds the model with the weights it is
evaluated with (the moving average when the run kept one), on its device, in its memory format.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from trainkit.data import build as data
from trainkit.data import transforms
from trainkit.data.split import stored_split
from trainkit.data.table import DATASETS
from trainkit.errors import CheckpointError, ConfigError
from trainkit.models import build as models
from trainkit.models import python as python_source
from trainkit.run import config, devices
from trainkit.run.config import Config
from trainkit.store import checkpoint


def checkpoint_config(
    ckpt: dict[str, Any],
    source: str,
    overrides: tuple[str, ...] | list[str] = (),
    data_dir: str | None = None,
    notes: list[str] | None = None,
) -> Config:
    """The checkpoint's config, its keys with side effects defused (`untrusted`), with `--data DIR` and `--set`
    applied (the user's flags rule), validated once."""
    raw = copy.deepcopy(ckpt["config"])
    defused = untrusted(raw)
    if defused:
        line = f"{source}: from its stored config, {', '.join(defused)} (a checkpoint's config is data, not orders)"
        if notes is not None:
            notes.append(line)
        else:
            print(f"trainkit: {line}", file=sys.stderr, flush=True)
    if data_dir is not None:
        with_data(raw.setdefault("data", {}), data_dir)
    origins: dict[str, str] = {}
    raw = config.apply_overrides(raw, overrides, origins, notes)
    try:
        return config.from_dict(raw, origins)
    except ConfigError as exc:
        if str(exc).startswith("--set"):  # the user's override is wrong, not the checkpoint
            raise
        raise CheckpointError(f"{source}: its stored config is not valid for this trainkit: {exc}") from None


def with_data(data_raw: dict[str, Any], data_dir: str) -> None:
    """`--data PATH` in a stored `data` section: its type's val key (or `root`) set to it, and a folder of
    classes for a run on label files, or a label file for a run on folders, read as what it is (its rows
    all val). The run's `val_split` no longer applies."""
    name = data_raw.get("dataset", config.default_of("data.dataset"))
    if name == "csv" and os.path.isdir(data_dir):
        data_raw["dataset"] = name = "imagefolder"
    elif name == "imagefolder" and data_dir.lower().endswith((".csv", ".tsv")) and os.path.isfile(data_dir):
        data_raw["dataset"] = name = "csv"
        for key in ("root", "path_column", "label_column", "split_column", "delimiter"):
            data_raw.pop(key, None)  # the label file's own layout: the defaults
    kind = DATASETS.get(name)
    data_raw[kind.data_dir_key if kind else "val"] = data_dir  # an unknown type: said when validated
    if kind is not None and kind.data_dir_key == "val":
        data_raw.pop("val_split", None)
    if name == "csv":  # its labels are the classes it holds, mapped onto the checkpoint's by name
        data_raw["train"] = data_dir
        data_raw.pop("split_column", None)


# a stored config's keys that would download, or write where its author chose
PREFETCH = 8  # batches each DataLoader worker may hold ahead, from a checkpoint's config (torch's default is 2)
IGNORED = (("data", "download", False), ("data", "cache_dir", None), ("", "run_dir", None))


def untrusted(raw: dict[str, Any]) -> list[str]:
    """Defuse a checkpoint's stored config in place: what would download or choose where to write is dropped
    (the user's defaults and flags rule), and counts of processes and threads are capped to this machine.
    Returns what was changed, in words (the run_dir, always stored, is dropped without a word)."""
    said = []
    for section, key, safe in IGNORED:
        node = raw.get(section) if section else raw
        if isinstance(node, dict) and node.get(key) not in (None, False, safe):
            if key != "run_dir":
                said.append(f"ignored {section}.{key}: {node[key]!r}")
            node[key] = safe
    cpus = os.cpu_count() or 1
    for section, key, limit, unit in (
        ("data", "num_workers", cpus, "this machine's CPUs"),
        ("", "threads", cpus, "this machine's CPUs"),
        ("data", "prefetch_factor", PREFETCH, "batches a worker loads ahead"),
    ):
        node = raw.get(section) if section else raw
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            said.append(f"capped {(section + '.') if section else ''}{key} {value} to {limit} ({unit})")
            node[key] = limit  # type: ignore[index]
    return said


@dataclass
class Trained:
    """A trained model as its run evaluated it, and what is needed to feed it."""

    path: str
    ckpt: dict[str, Any]
    cfg: Config
    classes: list[str]
    model: nn.Module  # in eval mode, on `device`, in its memory format
    device: torch.device
    channels_last: bool
    weights: str  # "ema" (the moving average of train.ema) or "model"

    @property
    def labels(self) -> list[str]:
        """The names of the model's outputs: the data's classes, or, for a model that kept its pretrained head
        (`pretrained_categories` in the checkpoint), the weights' own (ImageNet's)."""
        own = self.ckpt.get("pretrained_categories")
        return [str(c) for c in own] if isinstance(own, list) and own else self.classes

    @property
    def epoch(self) -> int:
        return int(self.ckpt["epoch"])

    @property
    def amp(self) -> str:
        return self.cfg.train.amp

    @property
    def tta(self) -> str:
        return self.cfg.eval.tta

    @property
    def transform(self) -> v2.Compose:
        """The val transforms: a PIL image in, the model's input out."""
        return transforms.build_transform(transforms.val_calls(self.cfg.data))

    def val_data(self) -> data.Data:
        """The val data of the (possibly overridden) config, with the checkpoint's classes; a run that split its
        val off data.train takes the val files its split.json (beside the checkpoint) lists."""
        stored = stored_split(Path(self.path).parent) if self.cfg.data.val_split is not None and self.cfg.data.val is None else None  # fmt: skip
        return data.build_data(
            self.cfg.data, self.cfg.seed, self.device, classes=self.classes, train=False, stored_split=stored
        )

    def test_data(self) -> data.Data:
        """The test set (data.test, or the rows a split_column marks test), in val's place."""
        return data.build_data(
            self.cfg.data, self.cfg.seed, self.device, classes=self.classes, train=False, val_from="test"
        )


def check_code(cfg: Config, ckpt: dict[str, Any], source: str, trust_code: bool) -> None:
    """A checkpoint whose model is `model.python` is imported only with --trust-code: importing it runs code.
    With it, a file that has changed since training is said in one line."""
    if cfg.model.source != "python":
        return
    ref = cfg.model.net
    if not trust_code:
        raise CheckpointError(
            f"{source}: its model is code ({ref}), and importing it runs that code; give --trust-code if you "
            "trust where this checkpoint came from"
        )
    stored, now = (ckpt.get("model_code") or {}).get("sha256"), python_source.source_hash(ref)
    if stored and now and stored != now:
        print(f"trainkit: warning: {ref.target} has changed since {source} was trained; its weights may not fit", file=sys.stderr)  # fmt: skip


def load_trained(
    path: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    data_dir: str | None = None,
    device: str | None = None,
    trust_code: bool = False,
) -> Trained:
    """Rebuild a checkpoint's model with the weights it is evaluated with; `device` overrides the config's;
    `trust_code`: --trust-code, for a model of `model.python`."""
    source = str(path)
    ckpt = checkpoint.read_checkpoint(path)
    # the checkpoint's own weights replace any starting weights: derive the config, never mutate it
    stored = copy.deepcopy(ckpt["config"])
    if isinstance(stored.get("model"), dict):
        stored["model"]["weights"] = None
    cfg = checkpoint_config({**ckpt, "config": stored}, source, overrides, data_dir)
    check_code(cfg, ckpt, source, trust_code)
    devices.set_threads(cfg.threads)
    model = models.build_model(cfg.model, seed=cfg.seed, num_classes=len(ckpt["classes"]))  # no weights file read
    checkpoint.load_state(model, checkpoint.inference_weights(ckpt), source)
    dev = devices.select_device(device or cfg.device)
    model.to(dev).eval()
    fmt = devices.channels_last(cfg, model)  # the memory format training evaluated in: the same numbers
    if fmt:
        model.to(memory_format=torch.channels_last)
    weights = "ema" if ckpt.get("ema") is not None else "model"
    return Trained(
        path=source,
        ckpt=ckpt,
        cfg=cfg,
        classes=list(ckpt["classes"]),
        model=model,
        device=dev,
        channels_last=fmt,
        weights=weights,
    )
