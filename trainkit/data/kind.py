"""What a dataset type is: the `data` keys it needs, how it opens a split, and where `--data DIR` goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetKind:
    """One `data.dataset` type.

    `needs`: the data keys it requires, each with the hint of its error; `open(data_cfg, split, transform)`
    the 'train' or 'val' dataset (an `images.ImageDataset`: its files or its decoded arrays); `data_dir_key`
    the key that `eval --data DIR` and `report --data DIR` set; `files_key` the key of the val image files
    an export is verified on (None: the type reads an archive, or a label file); `can_split`: whether
    `data.val_split` may take val from its training files."""

    needs: dict[str, str]
    open: Callable[[Any, str, Any], Any]
    data_dir_key: str
    files_key: str | None = None
    can_split: bool = False
