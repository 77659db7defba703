"""`data.dataset: imagefolder`: `data.train` and `data.val` folders, one sub-folder per class."""

from __future__ import annotations

from typing import Any

from trainkit.data.kind import DatasetKind

FOLDER = "required for dataset imagefolder: a folder with one sub-folder per class"


def open_split(cfg: Any, split: str, transform: Any) -> Any:
    from trainkit.data.images import ImageFolder

    return ImageFolder(getattr(cfg, split), transform, f"data.{split}", (cfg.scan.max_other_files, cfg.scan.max_depth))


KIND = DatasetKind(
    needs={"train": FOLDER, "val": FOLDER}, open=open_split, data_dir_key="val", files_key="val", can_split=True
)
