"""`data.dataset: cifar10` and `cifar100`: the python archives under `data.root`, read by torchvision's own
code without its md5 checks (re-hashing 170 MB at each start; re-packed archives in the same format load)."""

from __future__ import annotations

import functools
import os
from typing import Any

from trainkit.data.kind import DatasetKind
from trainkit.errors import DataError

ROOT = "the folder that holds the extracted archive"


@functools.cache
def _dataset_class(name: str) -> Any:
    """torchvision's CIFAR class with existence checks instead of md5 checks, reading as `images.Arrays`."""
    from torchvision import datasets

    from trainkit.data.images import Arrays

    base = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    return type(
        base.__name__,
        (Arrays, base),
        {
            "train_list": [[file, None] for file, _ in base.train_list],
            "test_list": [[file, None] for file, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
            "__module__": __name__,
        },
    )


def _opener(name: str, folder: str, url: str) -> Any:
    def open_split(cfg: Any, split: str, transform: Any) -> Any:
        try:
            return _dataset_class(name)(cfg.root, train=split == "train", transform=transform, download=cfg.download)
        except RuntimeError:
            raise DataError(
                f"data.root: no {name} files in {os.path.join(cfg.root, folder)}; "
                f"extract {url} into {cfg.root}, or set data.download: true"
            ) from None

    return open_split


CIFAR10 = DatasetKind(
    needs={"root": f"required for dataset cifar10: {ROOT}"},
    open=_opener("cifar10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    data_dir_key="root",
)
CIFAR100 = DatasetKind(
    needs={"root": f"required for dataset cifar100: {ROOT}"},
    open=_opener("cifar100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    data_dir_key="root",
)
