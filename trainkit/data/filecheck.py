"""Find the files that cannot be images before the first training step, fast.

Each file is opened once and only its first and last bytes are read: an empty file, a header that no
image format starts with, or a JPEG or PNG whose end marker is missing (a cut download) is a bad file.
A JPEG without its end marker in the last bytes may still be whole (some cameras append data after it),
so such a suspect is decoded in full before it is called bad. Threads overlap the file system calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

HEAD, TAIL = 16, 32
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
FORMATS = (  # (magic at offset 0, name)
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P1", "pnm"),
    (b"P2", "pnm"),
    (b"P3", "pnm"),
    (b"P4", "pnm"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)


def _format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in FORMATS if head.startswith(magic)), None)


def _decodes(path: str) -> bool:
    from trainkit.data.images import load_rgb

    try:
        load_rgb(path).load()
        return True
    except Exception:  # any decoder failure: the file is bad
        return False


def check_file(path: str) -> str | None:
    """Why `path` cannot be an image, or None when it looks whole."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
            if not head:
                return "empty file"
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL))
            tail = f.read(TAIL)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    kind = _format(head)
    if kind is None:
        return "not an image: no image format starts like it"
    if kind == "jpeg" and b"\xff\xd9" not in tail and not _decodes(path):
        return "truncated JPEG: its end marker is missing"
    if kind == "png" and not tail.endswith(PNG_END) and not _decodes(path):
        return "truncated PNG: its end chunk is missing"
    return None


def find_bad_files(paths: Sequence[str], workers: int | None = None) -> list[tuple[str, str]]:
    """(path, reason) of each file that cannot be an image, in the order given."""
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(check_file, paths, chunksize=512))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]
