"""The table of dataset types: the `data.dataset` name of each, and its module. A new type is one module and
one line here."""

from __future__ import annotations

from trainkit.data import cifar, csvfile, imagefolder, mnist
from trainkit.data.kind import DatasetKind

DATASETS: dict[str, DatasetKind] = {
    "imagefolder": imagefolder.KIND,
    "csv": csvfile.KIND,
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "mnist": mnist.MNIST,
    "fashion_mnist": mnist.FASHION_MNIST,
    "kmnist": mnist.KMNIST,
}
