"""`data.dataset: mnist`, `fashion_mnist` and `kmnist`: 28 x 28 grayscale images in the IDX files under
`data.root/<Name>/raw` (as torchvision lays them out, gunzipped), read by torchvision's own code.

The images have one channel: a model for them starts with `Conv2d: [1, ...]` (or `Grayscale: 3` among
the transforms). `data.download: true` lets torchvision fetch the files.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from trainkit.data.kind import DatasetKind
from trainkit.errors import DataError

CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}  # torchvision's names


@functools.cache
def _dataset_class(name: str) -> Any:
    """torchvision's class, reading as `images.Arrays`, its targets a list of ints as trainkit's samplers take."""
    from torchvision import datasets

    from trainkit.data.images import Arrays

    base = getattr(datasets, CLASSES[name])

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self.targets = [int(t) for t in self.targets]

    return type(base.__name__, (Arrays, base), {"__init__": __init__, "__module__": __name__})


def _opener(name: str) -> Any:
    def open_split(cfg: Any, split: str, transform: Any) -> Any:
        cls = _dataset_class(name)
        try:
            return cls(cfg.root, train=split == "train", transform=transform, download=cfg.download)
        except RuntimeError:
            files = ", ".join(os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources)
            raise DataError(
                f"data.root: no {name} files in {os.path.join(cfg.root, CLASSES[name], 'raw')}; put {files} "
                "there (gunzipped), or set data.download: true"
            ) from None

    return open_split


def kind(name: str) -> DatasetKind:
    return DatasetKind(
        needs={"root": f"required for dataset {name}: the folder that holds {CLASSES[name]}/raw"},
        open=_opener(name),
        data_dir_key="root",
    )


MNIST, FASHION_MNIST, KMNIST = kind("mnist"), kind("fashion_mnist"), kind("kmnist")
