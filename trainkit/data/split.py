"""`data.val_split`: val split off the training data, class by class, by a hash of each file's path.

A file goes to val when the hash of (`data.split_seed`, its path relative to the data's root) falls below the
fraction. Its side depends on its own path alone: changing `seed` moves nothing, and images added to the folder
later never move one already assigned. Each class gives about the fraction (stratified in expectation), and
at least one image to each side when it has two. The run writes the list of val files to `split.json`;
`eval`, `report`, `predict` and `--resume` take that list rather than a recomputed one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.errors import DataError
from trainkit.text import fmt_pct

SPLIT_FILE = "split.json"
MAX_BYTES = 2**28  # 256 MiB: millions of paths; a larger split.json is not one


@dataclass(frozen=True)
class SplitPlan:
    """Which samples of the training data are val: indices into its file list, and what split.json records."""

    train: list[int]
    val: list[int]
    record: dict[str, Any]
    line: str  # said at start


def unit(seed: int, rel: str) -> float:
    """A path's place in [0, 1): the first 8 bytes of sha256(seed, path)."""
    digest = hashlib.sha256(f"{seed}\0{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fraction_of(val_split: float | int, n: int) -> float:
    return float(val_split) if isinstance(val_split, float) else min(1.0, val_split / max(n, 1))


def plan_split(
    files: list[str], targets: list[int], root: str, val_split: float | int, seed: int, key: str
) -> SplitPlan:
    """The hash split of `files` (with their class `targets`), described as a run says it."""
    rels = [os.path.relpath(f, root) for f in files]
    place = [unit(seed, r) for r in rels]
    frac = fraction_of(val_split, len(files))
    val = {i for i, u in enumerate(place) if u < frac}
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    for members in by_class.values():
        if len(members) < 2:
            continue
        inside = [i for i in members if i in val]
        if not inside:  # a small class: its lowest-placed file
            val.add(min(members, key=place.__getitem__))
        elif len(inside) == len(members):
            val.discard(max(members, key=place.__getitem__))
    return _plan(rels, val, root, val_split, seed, key, computed=True)


def apply_split(files: list[str], root: str, record: dict[str, Any], key: str, source: str) -> SplitPlan:
    """The split a run recorded (split.json): its val files, the rest train. A recorded val file that is gone
    is said; files added since go to train (no run validated on them)."""
    rels = [os.path.relpath(f, root) for f in files]
    wanted = set(record.get("val") or [])
    val = {i for i, r in enumerate(rels) if r in wanted}
    if not val:
        raise DataError(
            f"{key}: none of the {len(wanted):,} val files of {source} is in {root}; is it the run's data folder?"
        )
    plan = _plan(rels, val, root, record.get("val_split", 0.0), int(record.get("split_seed", 0)), key, computed=False)
    gone = len(wanted) - len(val)
    if gone:
        plan = SplitPlan(plan.train, plan.val, plan.record, plan.line + f"; {gone:,} of its val files are gone")
    return SplitPlan(
        plan.train, plan.val, plan.record, plan.line.replace("(stratified", f"(from {source}, stratified", 1)
    )


def _plan(rels: list[str], val: set[int], root: str, val_split: Any, seed: int, key: str, computed: bool) -> SplitPlan:
    train_idx = [i for i in range(len(rels)) if i not in val]
    val_idx = sorted(val)
    shown = fmt_pct(val_split) if isinstance(val_split, float) else f"{val_split:,} images"
    line = (
        f"val: {shown} of {key.removeprefix('data.')} split off (stratified, split_seed {seed}): "
        f"{len(train_idx):,} train / {len(val_idx):,} val"
    )
    record = {
        "val_split": val_split,
        "split_seed": seed,
        "root": os.path.abspath(root),
        "train_count": len(train_idx),
        "val_count": len(val_idx),
        "val": sorted(rels[i] for i in val_idx),
    }
    return SplitPlan(train_idx, val_idx, record, line)


def stored_split(folder: str | Path) -> tuple[dict[str, Any], str] | None:
    """The split.json of a run directory and its path for messages (None: there is none)."""
    path = Path(folder) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than any split of trainkit")
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable split file ({exc}); delete it to split again") from None
    val = record.get("val") if isinstance(record, dict) else None
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise DataError(f"{path}: not a split file of trainkit (no list of val files); delete it to split again")
    if not isinstance(record.get("split_seed", 0), int) or not isinstance(record.get("root", ""), str):
        raise DataError(f"{path}: not a split file of trainkit (its split_seed or root); delete it to split again")
    return record, str(path)
