"""The `data` section of a config: the dataset, its loaders, sampler, transforms, cache and scan bounds.

`run.config` builds it from YAML and `--set` overrides (with the other sections); every later module
receives it typed and checked, and never re-validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from trainkit.config import specs
from trainkit.config.specs import Call
from trainkit.data.kind import DatasetKind
from trainkit.data.table import DATASETS
from trainkit.errors import check_count, check_parallel, key_error
from trainkit.text import suggest


@dataclass
class SamplerConfig:
    type: Literal["random", "sequential", "weighted"] = "random"
    class_weights: Union[Literal["balanced"], dict[str, float]] = "balanced"
    num_samples: int | None = None
    replacement: bool = True

    @staticmethod
    def _shorthand(raw: Any) -> Any:
        return {"type": raw} if isinstance(raw, str) else raw

    def _check(self, path: str) -> None:
        if self.num_samples is not None and self.num_samples < 1:
            raise key_error(f"{path}.num_samples", f"must be a positive integer, got {self.num_samples}")
        if isinstance(self.class_weights, dict):
            for name, w in self.class_weights.items():
                if w < 0:
                    raise key_error(f"{path}.class_weights.{name}", f"weight must be >= 0, got {w}")


@dataclass
class ScanConfig:
    """The bounds of a data folder's scan: a wrong folder (`/proc`, `/`, a home folder) ends in one line."""

    max_other_files: int = 10_000  # files that are not images
    max_depth: int = 32  # folders below a class folder

    def _check(self, path: str) -> None:
        for name in ("max_other_files", "max_depth"):
            if getattr(self, name) < 0:
                raise key_error(f"{path}.{name}", f"must be >= 0, got {getattr(self, name)}")


BATCH_TRANSFORMS = ("MixUp", "CutMix")  # torchvision v2's transforms of whole batches


@dataclass
class TransformsConfig:
    train: list[Any] = field(default_factory=list)
    val: list[Any] | None = None
    train_calls: list[Call] = field(init=False, default_factory=list)
    val_calls: list[Call] | None = field(init=False, default=None)

    def _check(self, path: str) -> None:
        names = specs.transforms()
        self.train_calls = [
            specs.parse_call(t, f"{path}.train[{i}]", names, "transform") for i, t in enumerate(self.train)
        ]
        for call in self.train_calls:
            if call.name in BATCH_TRANSFORMS:
                raise key_error(
                    call.path,
                    f"{call.name} mixes whole batches (images and labels), not one image; "
                    f"move it to data.batch_transforms (e.g. batch_transforms: [{{{call.name}: {{alpha: 1.0}}}}])",
                )
        if self.val is not None:
            self.val_calls = [
                specs.parse_call(t, f"{path}.val[{i}]", names, "transform") for i, t in enumerate(self.val)
            ]


@dataclass
class DataConfig:
    dataset: str = "imagefolder"  # a name in data.table.DATASETS
    train: str | None = None
    val: str | None = None
    root: str | None = None
    download: bool = False
    batch_size: int = 128
    val_batch_size: int | None = None
    num_workers: int = 2
    pin_memory: bool | None = None
    persistent_workers: bool = False
    drop_last: bool = False
    prefetch_factor: int | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    transforms: TransformsConfig = field(default_factory=TransformsConfig)
    batch_transforms: list[Any] = field(default_factory=list)  # MixUp, CutMix: one per batch, chosen at random
    batch_calls: list[Call] = field(init=False, default_factory=list)
    on_bad_image: Literal["error", "skip"] = "error"
    max_bad_fraction: float = 0.5  # on_bad_image: skip: an epoch with more of its images bad is an error
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: str | None = None
    cache_size: int | None = None  # photos of many sizes: stored with the shorter side at most this (cache.py)
    subset: int | None = None
    scan: ScanConfig = field(default_factory=ScanConfig)
    test: str | None = None  # a test set apart from val: a folder (or, for csv, a label file); used once, at the end
    val_split: Union[float, int, None] = None  # without data.val: this fraction (or count) of data.train is val
    split_seed: int = 0  # which images val_split takes; apart from `seed`, so a new seed moves none
    path_column: Union[str, int, None] = None  # dataset csv: the column of image paths (default: the first)
    label_column: Union[str, int, None] = None  # dataset csv: the column of labels (default: the second)
    split_column: Union[str, int, None] = None  # dataset csv: a column of train / val / test per row
    delimiter: str | None = None  # dataset csv: sniffed from , ; and tab when not given
    classes: list[str] | None = None  # dataset csv: the class order (default: the training labels, sorted)

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size

    def _check(self, path: str) -> None:
        names = {n: c for n, c in specs.transforms().items() if n in BATCH_TRANSFORMS}
        self.batch_calls = [
            specs.parse_call(t, f"{path}.batch_transforms[{i}]", names, "batch transform")
            for i, t in enumerate(self.batch_transforms)
        ]
        for name in ("batch_size", "val_batch_size", "prefetch_factor", "subset", "cache_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise key_error(f"{path}.{name}", f"must be a positive integer, got {value}")
            check_count(value, f"{path}.{name}")
        if self.num_workers < 0:
            raise key_error(f"{path}.num_workers", f"must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise key_error(f"{path}.max_bad_fraction", f"must be from 0 to below 1, got {self.max_bad_fraction}")
        check_parallel(self.num_workers, f"{path}.num_workers", "worker processes")
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise key_error(f"{path}.prefetch_factor", "needs num_workers > 0")
        kind = DATASETS.get(self.dataset)
        if kind is None:
            known = ", ".join(DATASETS)
            raise key_error(
                f"{path}.dataset",
                f"unknown dataset type {self.dataset!r}{suggest(self.dataset, list(DATASETS))}; the types are {known}",
            )
        for key, hint in kind.needs.items():
            if getattr(self, key) is None and not (key == "val" and self.val_split is not None):
                raise key_error(f"{path}.{key}", hint + (" (or data.val_split: 0.2 to split data.train)" if key == "val" and kind.can_split else ""))  # fmt: skip
        self._check_split(path, kind)

    def _check_split(self, path: str, kind: DatasetKind) -> None:
        if self.test is not None and not kind.can_split:
            raise key_error(
                f"{path}.test", f"dataset {self.dataset} has its own val set (its test split); leave test out"
            )
        if self.val_split is None:
            return
        if not kind.can_split:
            raise key_error(f"{path}.val_split", f"dataset {self.dataset} has its own val set; leave val_split out")
        if self.val is not None:
            raise key_error(f"{path}.val_split", "give data.val or data.val_split, not both")
        v = self.val_split
        if isinstance(v, bool) or (isinstance(v, float) and not 0.0 < v < 1.0) or (isinstance(v, int) and v < 1):
            raise key_error(
                f"{path}.val_split", f"a fraction between 0 and 1 (0.2) or a number of images (300), got {v}"
            )

    @property
    def has_test(self) -> bool:
        """A test set is given: data.test, or (csv) a split_column whose rows may say test."""
        if self.test is not None:
            return True
        if self.dataset != "csv" or self.split_column is None:
            return False
        from trainkit.data.csvfile import has_rows

        return has_rows(self, "test")

    @property
    def kind(self) -> DatasetKind:
        """What the rest needs of this dataset type (`data.table`)."""
        return DATASETS[self.dataset]
