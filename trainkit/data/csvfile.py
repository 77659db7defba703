"""`data.dataset: csv`: a label file of `path,label` rows beside a folder of images, as Kaggle's competitions,
MMPretrain's `ann_file` and fastai's `from_df` have them.

`data.train` (and optionally `data.val`) name CSV (or TSV) files. The images' paths are taken from `data.root`
(default: the CSV's own folder). The columns are the first two, or named by `path_column` and `label_column`
(a header name or a 0-based index); the delimiter is sniffed (`,` `;` tab) unless given. `split_column` assigns
each row of `data.train` to train, val or test by its value; `classes` gives the class order (default: the
training labels, sorted).

Bad rows are found when the file is read and named by file and line (`train.csv:1734`): a path that does not
exist or is not an image, a duplicate path, an empty label, a label that is not a class. Each follows
`data.on_bad_image`: refused in one line, or left out and said once.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from typing import Any

from trainkit.data.filecheck import find_bad_files
from trainkit.data.kind import DatasetKind
from trainkit.errors import DataError
from trainkit.text import plural, some, suggest

SPLITS = ("train", "val", "test")
MAX_BYTES = 2**30  # a label file larger than 1 GiB is not one


@dataclass(frozen=True)
class LabelRow:
    line: int  # 1-based, as an editor shows it
    path: str  # absolute
    label: str
    split: str | None


@dataclass(frozen=True)
class Table:
    """A label file as read: its good rows, and its bad ones with why."""

    source: str  # the file's name, as messages show it
    rows: list[LabelRow]
    bad: list[tuple[int, str]]  # (line, why)


def _column(header: list[str] | None, given: Any, default: int, key: str, source: str) -> int:
    if given is None:
        return default
    if isinstance(given, int):
        return given
    if header is None or given not in header:
        names = f"its header is {', '.join(header)}" if header else "it has no header row"
        raise DataError(f"{key}: {source} has no column {given!r}{suggest(str(given), header or [])}; {names}")
    return header.index(given)


def _dialect(text: str, delimiter: str | None) -> str:
    if delimiter:
        return delimiter
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _has_header(first: list[str], path_col: int) -> bool:
    """A first row whose path cell is no image file name is a header."""
    from trainkit.data.images import is_image_file

    return bool(first) and path_col < len(first) and not is_image_file(first[path_col].strip())


@functools.lru_cache(maxsize=8)
def read_table(path: str, root: str | None, columns: tuple[Any, Any, Any], delimiter: str | None, key: str) -> Table:
    """The rows of the label file at `path` (cached: train and val read it once)."""
    source = os.path.basename(path)
    if not os.path.isfile(path):
        raise DataError(f"{key}: label file {path} does not exist; point {key} at a CSV of path,label rows")
    if os.path.getsize(path) > MAX_BYTES:
        raise DataError(f"{key}: {path} is larger than 1 GiB; is it the label file?")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {path} cannot be read as text ({exc}); give a UTF-8 CSV") from None
    lines = list(csv.reader(text.splitlines(), delimiter=_dialect(text, delimiter)))
    if not lines:
        raise DataError(f"{key}: {path} is empty; give one path,label row per image")
    path_given, label_given, split_given = columns
    header = (
        [c.strip() for c in lines[0]]
        if _has_header(lines[0], path_given if isinstance(path_given, int) else 0)
        else None
    )
    p_col = _column(header, path_given, 0, key, source)
    l_col = _column(header, label_given, 1, key, source)
    s_col = (
        _column(header, split_given, -1, f"{key.rsplit('.', 1)[0]}.split_column", source)
        if split_given is not None
        else None
    )
    base = root if root is not None else os.path.dirname(os.path.abspath(path))
    start = 2 if header else 1
    rows: list[LabelRow] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for n, cells in enumerate(lines[1:] if header else lines, start=start):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if max(p_col, l_col, s_col or 0) >= len(cells):
            bad.append((n, f"{len(cells)} columns, fewer than the {max(p_col, l_col, s_col or 0) + 1} needed"))
            continue
        rel, label = cells[p_col].strip(), cells[l_col].strip()
        split = cells[s_col].strip().lower() if s_col is not None else None
        full = os.path.normpath(os.path.join(base, rel))
        if not rel:
            bad.append((n, "an empty path"))
        elif not label:
            bad.append((n, f"{rel}: an empty label"))
        elif full in seen:
            bad.append((n, f"{rel}: a duplicate of line {seen[full]}"))
        elif split is not None and split not in SPLITS:
            bad.append((n, f"{rel}: split {split!r}, not one of {', '.join(SPLITS)}"))
        elif not os.path.isfile(full):
            bad.append((n, f"{rel}: no such file under {base}"))
        else:
            seen[full] = n
            rows.append(LabelRow(n, full, label, split))
    broken = dict(find_bad_files([r.path for r in rows]))
    bad += [(r.line, f"{os.path.relpath(r.path, base)}: {broken[r.path]}") for r in rows if r.path in broken]
    return Table(source, [r for r in rows if r.path not in broken], sorted(bad))


def _table(cfg: Any, which: str) -> Table:
    path = getattr(cfg, which)
    return read_table(
        os.path.abspath(path),
        os.path.abspath(cfg.root) if cfg.root else None,
        (cfg.path_column, cfg.label_column, cfg.split_column),
        cfg.delimiter,
        f"data.{which}",
    )


def _rows_of(cfg: Any, split: str) -> tuple[Table, list[LabelRow]]:
    """The label file of `split` and its rows: its own file, or the rows of data.train that split_column gives it."""
    if split == "train" or getattr(cfg, split, None) is None:
        table = _table(cfg, "train")
        if cfg.split_column is None:
            return table, table.rows
        return table, [r for r in table.rows if (r.split or "train") == split]
    return _table(cfg, split), _table(cfg, split).rows


def has_rows(cfg: Any, split: str) -> bool:
    """Whether the label files give `split` any row (a split_column may mark none test)."""
    return bool(_rows_of(cfg, split)[1])


def classes_of(cfg: Any) -> list[str]:
    """`data.classes`, or the training rows' labels, sorted."""
    if cfg.classes:
        return list(cfg.classes)
    _, rows = _rows_of(cfg, "train")
    return sorted({r.label for r in rows})


def open_table(cfg: Any, split: str, transform: Any) -> Any:
    """The split's images with their classes; bad rows refused in one line or left out (`on_bad_image`), and
    then said once (`notes`)."""
    from trainkit.data.images import FileList

    own = split == "train" or getattr(cfg, split, None) is not None
    table, rows = _rows_of(cfg, split)
    classes = classes_of(cfg)
    index = {c: i for i, c in enumerate(classes)}
    key = f"data.{split}" if own else "data.train"
    bad = list(table.bad) if own else []  # the rows of data.train that split_column gives val: said with train's
    whose = "data.classes" if cfg.classes else "data.train"
    bad += [(r.line, f"label {r.label!r} is not a class of {whose}{suggest(r.label, classes)}") for r in rows if r.label not in index]  # fmt: skip
    notes = []
    if bad:
        named = some([f"{table.source}:{n}: {why}" for n, why in sorted(bad)], 3)
        if cfg.on_bad_image == "error":
            raise DataError(f"{key}: {plural(len(bad), 'bad row')}: {named}; fix them, or set data.on_bad_image: skip")
        notes.append(f"{key}: skipped {plural(len(bad), 'bad row')}: {named}")
    samples = [(r.path, index[r.label]) for r in rows if r.label in index]
    if not samples:
        raise DataError(f"{key}: {table.source} has no usable rows for {split}; give one path,label row per image")
    root = os.path.abspath(cfg.root) if cfg.root else os.path.dirname(os.path.abspath(cfg.train))
    return FileList(samples, classes, transform, root, notes)


KIND = DatasetKind(
    needs={"train": "required for dataset csv: a CSV file of path,label rows (data.root: the images' folder)"},
    open=open_table,
    data_dir_key="val",
    files_key=None,
    can_split=True,
)
