"""Image datasets as trainkit reads them: ImageFolder that names bad files instead of raising, and the
arrays of torchvision's decoded datasets (the dataset types are in `data.table`).

A file that cannot be decoded never raises inside a worker: the dataset
returns a `BadSample` marker and `loaders.collate` moves it to a side list, so
the main process can name the file (`on_bad_image: error`) or count it
(`on_bad_image: skip`) across all workers.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import datasets

from trainkit.errors import DataError

IMG_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


class ImageDataset(Protocol):
    """What trainkit reads of a dataset: torchvision's ImageFolder and CIFAR classes have it."""

    classes: list[str]
    targets: list[int]
    transform: Any

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...

    def files(self) -> list[str] | None:
        """The image files, in order (None: the dataset holds decoded arrays)."""
        ...

    def arrays(self) -> np.ndarray | None:
        """The decoded images (N, H, W, C) uint8 (None: the dataset reads files)."""
        ...

    def keep(self, indices: list[int]) -> None:
        """Keep only these samples, in this order."""
        ...


@dataclass
class BadSample:
    path: str
    reason: str


def load_rgb(path: str) -> Image.Image:
    """Decode any PIL-readable image to RGB (grayscale, palette, RGBA, CMYK included)."""
    with open(path, "rb") as f:
        img: Image.Image = Image.open(f)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # palette transparency must go through RGBA
        return img.convert("RGB")


class Listed:
    """What a dataset of `samples` (path, class) does: read each file as it is asked for (a BadSample when it
    cannot be decoded), name its files, keep some of them."""

    samples: list[tuple[str, int]]
    targets: list[int]
    transform: Any

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        return read_sample(path, self.transform), target

    def files(self) -> list[str] | None:
        return [p for p, _ in self.samples]

    def arrays(self) -> np.ndarray | None:
        return None

    def keep(self, indices: list[int]) -> None:
        self.samples = [self.samples[i] for i in indices]
        self.targets = [t for _, t in self.samples]
        if hasattr(self, "imgs"):  # torchvision's other name for them
            self.imgs = self.samples


class ImageFolder(Listed, datasets.ImageFolder):
    """torchvision's ImageFolder that ignores hidden folders and files and reports bad images."""

    samples: list[tuple[str, int]]
    imgs: list[tuple[str, int]]
    targets: list[int]

    def __init__(self, root: str, transform: Any, key: str, limits: tuple[int, int] = (10_000, 32)) -> None:
        if not os.path.isdir(root):
            where = root
            if not os.path.isabs(root):
                where += f" ({os.path.abspath(root)}: a relative path is taken from the current folder)"
            raise DataError(
                f"{key}: folder {where} does not exist; point {key} at a folder with one sub-folder per class"
            )
        self.key, self.limits = key, limits
        self.ignored: list[str] = []
        super().__init__(root, transform=transform, is_valid_file=is_image_file, allow_empty=True)
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        empty = [os.path.join(root, c) for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            raise DataError(
                f"{key}: class folder {empty[0]} has no image files ({', '.join(IMG_EXTENSIONS[:4])}, ...); "
                "add images, or remove that class from both data.train and data.val (they must hold the same classes)"
            )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if not e.name.startswith(".") and _is_dir(e, self.key))
        if not classes:
            raise DataError(
                f"{self.key}: no class folders in {directory}; put each class's images in its own sub-folder"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def make_dataset(
        self, directory: str, class_to_idx: dict[str, int], *args: Any, **kwargs: Any
    ) -> list[tuple[str, int]]:
        """torchvision's order (classes sorted, then folders, then files), from a bounded scan that follows each
        symlink once; the files it passes over (not images, or beside the class folders) go to `ignored`."""
        with os.scandir(directory) as entries:
            self.ignored = sorted(e.path for e in entries if not e.name.startswith(".") and not _is_dir(e, self.key))
        samples = []
        for name in sorted(class_to_idx):
            images, others = scan(os.path.join(directory, name), self.key, *self.limits)
            samples += [(p, class_to_idx[name]) for p in images]
            self.ignored += others
        return samples


class FileList(Listed):
    """Images named by a list (a label file's rows), read as ImageFolder reads its files. `notes`: what its
    reading found worth saying (rows left out)."""

    def __init__(
        self, samples: list[tuple[str, int]], classes: list[str], transform: Any, root: str, notes: list[str]
    ) -> None:
        self.samples, self.classes, self.transform, self.root, self.notes = list(samples), list(classes), transform, root, notes  # fmt: skip
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


def _is_dir(entry: os.DirEntry, key: str) -> bool:
    try:
        return entry.is_dir()  # follows a symlink
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link to itself
            raise DataError(f"{key}: {entry.path} cannot be followed: a symlink loop; remove it") from None
        raise DataError(f"{key}: {entry.path} cannot be read ({exc.strerror}); is it the right folder?") from None


def scan(folder: str, key: str, max_other: int, max_depth: int) -> tuple[list[str], list[str]]:
    """The image files under `folder` and the other files, hidden ones aside. Symlinks are followed, each real
    folder once (a link back to a folder above is a loop, named); more than `max_other` files that are not
    images, or folders deeper than `max_depth`, are refused: `/proc` or `/` given as data end in one line."""
    try:
        return _scan(folder, key, max_other, max_depth)
    except OSError as exc:  # an unreadable folder on the way
        raise DataError(f"{key}: {exc.filename} cannot be read ({exc.strerror}); is it the right folder?") from None


def _scan(folder: str, key: str, max_other: int, max_depth: int) -> tuple[list[str], list[str]]:
    root = _identity(folder)
    seen = {root}
    found: list[tuple[str, list[str]]] = []
    others: list[str] = []
    todo: list[tuple[str, int, dict[tuple[int, int], str]]] = [(folder, 0, {root: folder})]  # and its ancestors
    while todo:
        path, depth, above = todo.pop()
        files = []
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                if _is_dir(e, key):
                    ident = _identity(e.path)
                    if ident in above:
                        raise DataError(
                            f"{key}: {e.path} leads back to {above[ident]} (a symlink loop); remove the link"
                        )
                    if ident in seen:  # a folder linked twice: its images once
                        continue
                    if depth + 1 > max_depth:
                        raise DataError(
                            f"{key}: {e.path} is more than {max_depth} folders deep below {folder}; is it the right "
                            "folder? (data.scan.max_depth sets the limit)"
                        )
                    seen.add(ident)
                    todo.append((e.path, depth + 1, above | {ident: e.path}))
                elif is_image_file(e.path):
                    files.append(e.path)
                else:
                    others.append(e.path)
                    if len(others) > max_other:
                        raise DataError(
                            f"{key}: {folder} holds more than {max_other:,} files that are not images; is it the "
                            "right folder? (data.scan.max_other_files sets the limit)"
                        )
        found.append((path, sorted(files)))
    return [p for _, files in sorted(found) for p in files], sorted(others)


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def read_sample(path: str, transform: Any) -> Any:
    """The image at `path` through `transform`, or a `BadSample` naming why it cannot be decoded."""
    try:
        img = load_rgb(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return BadSample(path, decode_failure(exc))
    return transform(img) if transform else img


def decode_failure(exc: BaseException) -> str:
    """Why a file failed to decode, in words (PIL's own message names a file object)."""
    if isinstance(exc, UnidentifiedImageError):
        return "no image decoder can identify it"
    return str(exc) or type(exc).__name__


def is_image_file(path: str) -> bool:
    return not os.path.basename(path).startswith(".") and path.lower().endswith(IMG_EXTENSIONS)


class Arrays:
    """What trainkit reads of a torchvision dataset of decoded arrays (CIFAR's (N, H, W, 3) numpy array,
    MNIST's (N, H, W) tensor): mixed into those classes by `data.cifar` and `data.mnist`."""

    data: Any
    targets: list[int]

    def files(self) -> list[str] | None:
        return None

    def arrays(self) -> np.ndarray | None:
        data = np.asarray(self.data)
        return data if data.ndim == 4 else data[..., None]  # one channel: (N, H, W, 1)

    def keep(self, indices: list[int]) -> None:
        self.data = self.data[indices]
        self.targets = [self.targets[i] for i in indices]
