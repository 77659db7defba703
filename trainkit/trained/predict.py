"""Using a trained model on new images: `trainkit predict` (labels) and `trainkit features` (a layer's output).

Both read image files and folders in any layout through the checkpoint's val transforms, in batches, on the
model `load_trained` rebuilds (its EMA weights, memory format and autocast, as `eval` uses them). A file's
label is known when the folders name the checkpoint's classes (an ImageFolder tree, or a folder named after
one class); it is -1 otherwise.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainkit.data.images import IMG_EXTENSIONS, is_image_file, read_sample
from trainkit.data.loaders import BadImages, SampleLoader
from trainkit.data.split import stored_split
from trainkit.errors import ConfigError, DataError
from trainkit.run.evaluation import outputs
from trainkit.store.files import write_atomic
from trainkit.text import fmt_pct, plural, some, suggest
from trainkit.trained.load import Trained

RESERVED = ("paths", "labels", "classes")  # the keys of a features file beside its layers


@dataclass
class Inputs:
    """The image files to read, their labels (-1: unknown) and the files passed over (not images)."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def add(self, path: str, label: int) -> None:
        if is_image_file(path):
            self.paths.append(path)
            self.labels.append(label)
        elif not os.path.basename(path).startswith("."):
            self.ignored.append(path)


def find_images(sources: list[str], classes: list[str], key: str = "PATH") -> Inputs:
    """Image files under `sources` (files and folders, recursively, sorted), labelled where folders name a class."""
    index = {c: i for i, c in enumerate(classes)}
    found = Inputs()
    for source in sources:
        if os.path.isfile(source) and source.lower().endswith((".csv", ".tsv")):
            _add_table(found, source, index, key)
        elif os.path.isfile(source):
            found.add(source, index.get(os.path.basename(os.path.dirname(os.path.abspath(source))), -1))
        elif os.path.isdir(source):
            own = index.get(os.path.basename(os.path.abspath(source)), -1)
            for folder, dirs, files in os.walk(source):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                top = Path(folder).relative_to(source).parts
                label = index.get(top[0], -1) if top else own
                for name in sorted(files):
                    found.add(os.path.join(folder, name), label)
        else:
            raise DataError(f"{key} {source}: no such file or folder")
    if not found.paths:
        raise DataError(
            f"{key} {' '.join(sources)}: no image files ({', '.join(IMG_EXTENSIONS[:4])}, ...) in it; "
            "give image files or folders that hold them"
        )
    return found


def _add_table(found: Inputs, source: str, index: dict[str, int], key: str) -> None:
    """A label file's images (paths from its own folder), labelled by its rows; a bad row, or a label that is
    not a class of the checkpoint, is an error naming its line."""
    from trainkit.data.csvfile import read_table

    table = read_table(os.path.abspath(source), None, (None, None, None), None, f"{key} {source}")
    bad = [f"{table.source}:{n}: {why}" for n, why in table.bad]
    bad += [f"{table.source}:{r.line}: label {r.label!r} is not a class of the checkpoint{suggest(r.label, list(index))}" for r in table.rows if r.label not in index]  # fmt: skip
    if bad:
        raise DataError(f"{key} {source}: {plural(len(bad), 'bad row')}: {some(bad, 3)}")
    for r in table.rows:
        found.add(r.path, index[r.label])


class Files:
    """A map-style dataset of image files: (transformed image, its index), or a BadSample."""

    def __init__(self, paths: list[str], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return read_sample(self.paths[index], self.transform), index


def file_batches(t: Trained, inputs: Inputs, batch_size: int | None, bad: BadImages) -> SampleLoader:
    """(images, their indices into `inputs`), as the checkpoint's val loader reads them."""
    cfg = t.cfg.data
    size = batch_size or cfg.eval_batch_size
    return SampleLoader(Files(inputs.paths, t.transform), range(len(inputs.paths)), size, cfg, t.device, 0, bad)


def check_out(out: str | None, suffixes: tuple[str, ...], option: str = "--out") -> None:
    """Fail before the work when `out` has a wrong suffix or cannot be written."""
    if out is None:
        return
    if os.path.isdir(out):
        raise ConfigError(f"{option} {out}: is a folder; give a file name")
    if not out.endswith(suffixes):
        raise ConfigError(f"{option} {out}: give a file ending in {' or '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConfigError(f"{option} {out}: folder {folder} does not exist; create it or write elsewhere")
    if not os.access(folder, os.W_OK) or (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise ConfigError(f"{option} {out}: cannot write there (permission denied); choose another place")


# ---- predict


@torch.inference_mode()
def predict_files(
    t: Trained, inputs: Inputs, topk: int, batch_size: int | None, tta: str, on_bad: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per decodable file: path, top-k (label, prob), true label; and the bad files skipped."""
    bad = BadImages(on_bad, "give --on-bad-image skip")
    k, names = min(topk, len(t.labels)), t.labels
    rows: list[dict[str, Any]] = []
    for logits, idx in outputs(
        t.model, file_batches(t, inputs, batch_size, bad), t.device, t.channels_last, t.amp, tta
    ):
        probs, top = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
        for i, p, c in zip(idx.tolist(), probs.cpu().tolist(), top.cpu().tolist()):
            label = inputs.labels[i]
            rows.append(
                {
                    "path": inputs.paths[i],
                    "top": [(names[j], q) for j, q in zip(c, p)],
                    "true": t.classes[label] if label >= 0 else None,
                }
            )
    return rows, bad.skipped


def write_predictions(rows: list[dict[str, Any]], out: str) -> None:
    k = len(rows[0]["top"]) if rows else 1

    def as_csv(f: Any) -> None:
        w = csv.writer(f)
        w.writerow(["path"] + [f"{name}{i + 1 if i else ''}" for i in range(k) for name in ("label", "prob")])
        for r in rows:
            w.writerow([r["path"]] + [v for label, p in r["top"] for v in (label, f"{p:.6f}")])

    def as_jsonl(f: Any) -> None:
        for r in rows:
            record = {"path": r["path"], "label": r["top"][0][0], "prob": r["top"][0][1]}
            record["top"] = [{"label": label, "prob": p} for label, p in r["top"]]
            if r["true"] is not None:
                record["true"] = r["true"]
            f.write(json.dumps(record) + "\n")

    write_atomic(out, as_csv if out.endswith(".csv") else as_jsonl)


def format_predictions(rows: list[dict[str, Any]], classes: list[str], shown: int = 10) -> str:
    """The first rows, the count per predicted class, and the accuracy over the labelled files."""
    width = min(60, max(len(r["path"]) for r in rows))
    k = len(rows[0]["top"])
    head = "label" if k == 1 else f"top {k} labels"
    lines = [f"{'path'.ljust(width)}  {head} ({len(rows)} images)"]
    for r in rows[:shown]:
        path = r["path"] if len(r["path"]) <= width else "..." + r["path"][-(width - 3) :]
        lines.append(f"{path.ljust(width)}  " + ", ".join(f"{label} {fmt_pct(p)}" for label, p in r["top"]))
    if len(rows) > shown:
        lines.append(f"... and {len(rows) - shown} more")
    counts = Counter(r["top"][0][0] for r in rows)
    lines += ["", "predicted per class: " + ", ".join(f"{c} {counts[c]}" for c in classes if counts[c])]
    labelled = [r for r in rows if r["true"] is not None]
    if labelled:
        right = sum(r["true"] == r["top"][0][0] for r in labelled)
        lines.append(f"accuracy on the {len(labelled)} labelled images: {fmt_pct(right / len(labelled))}")
    return "\n".join(lines)


# ---- features


def check_layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """The named modules for `--layer`; an unknown name lists the valid ones."""
    modules = {n: m for n, m in model.named_modules() if n}
    for name in names:
        if name in RESERVED:
            raise ConfigError(f"--layer {name}: the features file uses that key itself; name another layer")
        if name not in modules:
            shown = ", ".join(list(modules)[:40]) + (" ..." if len(modules) > 40 else "")
            raise ConfigError(
                f"--layer {name}: no such layer in the model (its layers: {shown}){suggest(name, list(modules))}"
            )
    return {n: modules[n] for n in names}


def pooled(y: Any, pool: str, name: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ConfigError(f"--layer {name}: its output is a {type(y).__name__}, not a tensor; choose another layer")
    y = y.detach().float()
    if pool == "avg" and y.dim() > 2:
        return y.mean(dim=tuple(range(2, y.dim())))
    if pool == "flatten":
        return y.flatten(1)
    return y


@torch.inference_mode()
def extract(
    t: Trained, inputs: Inputs, layers: list[str], pool: str, batch_size: int | None, on_bad: str
) -> tuple[dict[str, np.ndarray], list[int], list[str]]:
    """Per layer an (N, D) float32 array (or N x the layer's shape with pool `none`), the rows' indices into
    `inputs`, and the bad files skipped. Arrays are allocated once, at the first batch, and filled in place."""
    modules = check_layers(t.model, layers)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, y, n=n: seen.__setitem__(n, pooled(y, pool, n))) for n, m in modules.items()]  # fmt: skip
    bad = BadImages(on_bad, "give --on-bad-image skip")
    arrays: dict[str, np.ndarray] = {}
    rows: list[int] = []
    try:
        for _, idx in outputs(t.model, file_batches(t, inputs, batch_size, bad), t.device, t.channels_last, t.amp):
            n = len(idx)  # the forward hooks have seen the batch
            for name in layers:
                y = seen.pop(name).cpu().numpy()
                if name not in arrays:
                    arrays[name] = np.empty((len(inputs.paths), *y.shape[1:]), dtype=np.float32)
                arrays[name][len(rows) : len(rows) + n] = y
            rows += idx.tolist()
    finally:
        for h in hooks:
            h.remove()
    return {k: v[: len(rows)] for k, v in arrays.items()}, rows, bad.skipped


def write_features(
    out: str, arrays: dict[str, np.ndarray], inputs: Inputs, rows: list[int], classes: list[str]
) -> None:
    """An .npz of the layers' arrays (views, not copies), `paths`, `labels` and `classes`."""
    extra = {
        "paths": np.array([inputs.paths[i] for i in rows], dtype=str),
        "labels": np.array([inputs.labels[i] for i in rows], dtype=np.int64),
        "classes": np.array(classes, dtype=str),
    }
    payload: dict[str, Any] = {**arrays, **extra}
    write_atomic(out, lambda f: np.savez(f, **payload), binary=True)


def format_features(arrays: dict[str, np.ndarray]) -> str:
    return "\n".join(f"  {name}: {tuple(a.shape)} float32" for name, a in arrays.items())


def trained_on(t: Trained, inputs: Inputs) -> int:
    """A run that split its val off data.train (split.json beside the checkpoint): the labelled files it trained
    on lose their label, so that predict's accuracy counts only images it never trained on. How many."""
    if t.cfg.data.val_split is None or t.cfg.data.val is not None or t.cfg.data.train is None:
        return 0
    found = stored_split(os.path.dirname(os.path.abspath(t.path)))
    if found is None:
        return 0
    root = found[0].get("root") or os.path.abspath(t.cfg.data.train)
    val = set(found[0]["val"])
    hidden = 0
    for i, path in enumerate(inputs.paths):
        rel = os.path.relpath(os.path.abspath(path), root)
        if inputs.labels[i] >= 0 and not rel.startswith("..") and rel not in val:
            inputs.labels[i] = -1
            hidden += 1
    return hidden
