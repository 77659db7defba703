"""`trainkit runs`: one table of the run directories below some folders, read from their files alone (no torch).

A run directory holds config.yaml and metrics.jsonl or status.json. Its row says how it stands (from
status.json and the lock: `store.status`), its epochs, its best monitored value, its last val metrics, and the
config keys in which the listed runs differ. The trials of a sweep (folders in a study folder, which holds
`study.json`) are grouped under their study.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainkit.errors import ConfigError, RunDirError
from trainkit.store.status import lock_holder, read_jsonl, read_status
from trainkit.text import columns, flat_keys, fmt_metric, printable

STUDY_FILE = "study.json"  # what marks a sweep's folder (written by `trainkit sweep`)
MAX_CONFIG_BYTES = 1_000_000
SKIPPED_KEYS = ("name", "run_dir", "log.mlflow.parent_run")  # differ between any two runs: the name says them
FIELDS = ("run", "study", "state", "status", "epoch", "epochs", "monitor", "best", "best_epoch", "val_acc",
          "val_loss", "wall_s", "started")  # fmt: skip


@dataclass
class RunRow:
    run: str  # the folder, relative to the listed folder
    path: Path
    study: str | None
    state: str  # running, finished, stopped, pruned, failed
    status: str  # the state in words: "stopped at epoch 3 (SIGINT)"
    epoch: int  # epochs done
    epochs: int | None  # train.epochs
    monitor: str
    best: float | None
    best_epoch: int | None
    val_acc: float | None
    val_loss: float | None
    wall_s: float | None
    started: str  # ISO time
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)  # metrics.jsonl
    config: dict[str, Any] = field(repr=False, default_factory=dict)  # the resolved config, flattened

    def value(self, key: str) -> Any:
        return getattr(self, key) if key in FIELDS else self.config.get(key)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and any((path / n).is_file() for n in ("metrics.jsonl", "status.json"))


def find_run_dirs(root: Path) -> list[Path]:
    """`root` when it is a run directory, else every run directory below it (not below another run)."""
    if is_run_dir(root):
        return [root]
    found = []
    for folder, subdirs, _ in os.walk(root):
        here = Path(folder)
        if here != root and is_run_dir(here):
            found.append(here)
            subdirs.clear()
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return found


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml, flattened; {} when it cannot be read as a config (the row says so)."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return {}
        text = path.read_text(encoding="utf-8")
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C reader: 200 configs in a blink
        raw = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        return flat_keys(raw) if isinstance(raw, dict) else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return {}


def run_config(path: Path, status: dict[str, Any]) -> dict[str, Any]:
    """The run's config, flattened: status.json's copy (JSON, quick to read), else config.yaml (a run of an
    older trainkit); {} when neither can be read as a config."""
    held = status.get("config")
    if not isinstance(held, dict) or not held:
        return read_config(path / "config.yaml")
    try:
        return flat_keys(held)
    except (ValueError, RecursionError):
        return {}


def _best(records: list[dict[str, Any]], monitor: str, mode: str) -> tuple[float | None, int | None]:
    """The best value of the monitored metric and its epoch (the first epoch that reached it, as best.pt)."""
    best: tuple[float | None, int | None] = (None, None)
    for r in records:
        v = r.get(monitor)
        if (
            isinstance(v, (int, float))
            and v == v
            and (best[0] is None or (v > best[0] if mode == "max" else v < best[0]))
        ):
            best = (float(v), r.get("epoch"))
    return best


def _last(records: list[dict[str, Any]], key: str) -> float | None:
    return next((float(r[key]) for r in reversed(records) if isinstance(r.get(key), (int, float))), None)


def _state(path: Path, st: dict[str, Any], epoch: int, epochs: int | None) -> tuple[str, str]:
    """(state, the state in words): a live lock holder is running; a status of `running` that no process
    holds is a run whose process died (SIGKILL, a crash of the machine)."""
    holder = lock_holder(path)
    if holder is not None:
        return "running", f"running (pid {holder}), epoch {epoch}"
    state, reason = st.get("state"), st.get("reason")
    if state == "running":
        return "failed", f"failed in epoch {epoch + 1}: its process died (resume with --resume)"
    if state == "stopped" and reason == "pruned":
        return "pruned", f"pruned at epoch {epoch}"
    if state == "stopped":
        return "stopped", f"stopped at epoch {epoch} ({reason})"
    if state == "failed":
        return "failed", f"failed in epoch {epoch + 1}: {reason}"
    if state == "finished" or (epochs is not None and epoch >= epochs):
        return "finished", "finished"
    return "stopped", f"stopped at epoch {epoch}"  # a run of a trainkit before status.json


def read_row(path: Path, root: Path) -> RunRow:
    st = read_status(path)
    config = run_config(path, st)
    records = [r for r in read_jsonl(path / "metrics.jsonl") if isinstance(r, dict) and "epoch" in r]
    epoch = max((int(r["epoch"]) for r in records if isinstance(r["epoch"], int)), default=0)
    epoch = max(epoch, int(st.get("epoch") or 0))
    epochs = config.get("train.epochs") if isinstance(config.get("train.epochs"), int) else None
    monitor = str(config.get("train.monitor", "val_acc"))
    best, best_epoch = _best(records, monitor, str(config.get("train.monitor_mode", "max")))
    state, words = _state(path, st, epoch, epochs)
    wall = st.get("wall_s") if isinstance(st.get("wall_s"), (int, float)) else None
    if wall is None and records:
        wall = sum(float(r.get("time", 0) or 0) for r in records)
    started = st.get("started") or datetime.datetime.fromtimestamp((path / "config.yaml").stat().st_mtime).astimezone().isoformat(timespec="seconds")  # fmt: skip
    name = path.relative_to(root).as_posix() if path != root else path.name
    study = path.parent.name if (path.parent / STUDY_FILE).is_file() else None
    return RunRow(
        run=name,
        path=path,
        study=study,
        state=state,
        status=words,
        epoch=epoch,
        epochs=epochs,
        monitor=monitor,
        best=best,
        best_epoch=best_epoch,
        val_acc=_last(records, "val_acc"),
        val_loss=_last(records, "val_loss"),
        wall_s=wall,
        started=str(started),
        records=records,
        config=config,
    )


def differing(rows: list[RunRow]) -> list[str]:
    """The config keys whose values are not the same in every row, in the configs' order."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.config))
    if len(rows) < 2:
        return []
    first = rows[0].config
    return [
        k
        for k in keys
        if k not in SKIPPED_KEYS
        and any((v := r.config.get(k)) != first.get(k) or type(v) is not type(first.get(k)) for r in rows)
    ]


def list_runs(dirs: list[str]) -> list[RunRow]:
    rows = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise ConfigError(
                f"runs {printable(d)}: no such folder; give the folder that holds run directories (default runs/)"
            )
        rows += [read_row(p, root) for p in find_run_dirs(root)]
    if not rows:
        where = ", ".join(printable(d) for d in dirs)
        raise RunDirError(
            f"{where}: no run directories below it (a run holds config.yaml and metrics.jsonl); train one with trainkit train --config FILE"
        )
    return rows


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def sort_rows(rows: list[RunRow], key: str | None) -> list[RunRow]:
    """Newest first by default; `--sort KEY` ascending, `-KEY` descending; a row without the value last. The
    trials of a study stay together, by trial number unless KEY is given, and the study sits where its first
    trial would."""
    desc, name = (True, "started") if key is None else (key.startswith("-"), key.lstrip("-"))

    def ranked(items: list[RunRow]) -> list[RunRow]:
        have = [r for r in items if r.value(name) is not None]
        none = [r for r in items if r.value(name) is None]
        have.sort(key=lambda r: (_sortable(r.value(name)), _natural(r.run)), reverse=desc)
        return have + none

    studies: dict[str, list[RunRow]] = {}
    for r in rows:
        if r.study is not None:
            studies.setdefault(str(r.path.parent), []).append(r)
    out, placed = [], set()
    for r in ranked(rows):
        group = str(r.path.parent)
        if r.study is None:
            out.append(r)
        elif group not in placed:
            placed.add(group)
            trials = studies[group]
            out += ranked(trials) if key is not None else sorted(trials, key=lambda t: _natural(t.run))
    return out


def _sortable(v: Any) -> Any:
    return (0, v) if isinstance(v, (int, float)) else (1, json.dumps(v, sort_keys=True, default=str))


def _wall(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _started(iso: str) -> str:
    try:
        return datetime.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def shown(v: Any) -> str:
    """A config value in a table: floats to 4 significant digits (CSV and JSON keep them whole)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def render_table(rows: list[RunRow], keys: list[str]) -> str:
    head = ["run", "status", "epochs", "best", "val_acc", "val_loss", "wall", "started", *keys]
    out: list[list[str]] = [head]
    seen: set[str] = set()
    for r in rows:
        if r.study is not None and str(r.path.parent) not in seen:
            seen.add(str(r.path.parent))
            trials = [t for t in rows if t.path.parent == r.path.parent]
            states = ", ".join(
                f"{sum(t.state == s for t in trials)} {s}" for s in dict.fromkeys(t.state for t in trials)
            )
            out.append(
                [f"{r.run.rsplit('/', 1)[0] if '/' in r.run else r.study}/", f"study: {len(trials)} trials ({states})"]
            )
        best = "-" if r.best is None else f"{fmt_metric(r.monitor, r.best)} {r.monitor} @{r.best_epoch}"
        name = f"  {r.run.rsplit('/', 1)[-1]}" if r.study is not None else r.run
        out.append([name, r.status[:60], f"{r.epoch}/{shown(r.epochs)}", best, fmt_metric("acc", r.val_acc),
                    fmt_metric("loss", r.val_loss), _wall(r.wall_s), _started(r.started),
                    *(shown(r.config.get(k)) for k in keys)])  # fmt: skip
    return columns(out)


def as_dicts(rows: list[RunRow], keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = {k: v for k, v in asdict(r).items() if k in FIELDS}
        out.append(d | {"path": str(r.path), "config": {k: r.config.get(k) for k in keys}})
    return out


def render_runs(rows: list[RunRow], fmt: str) -> str:
    keys = differing(rows)
    if fmt == "table":
        return render_table(rows, keys)
    dicts = as_dicts(rows, keys)
    if fmt == "json":
        return json.dumps(dicts, indent=1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*FIELDS, *keys])
    for d in dicts:
        writer.writerow([*(d[k] if d[k] is not None else "" for k in FIELDS), *(shown(d["config"][k]) for k in keys)])
    return buf.getvalue().rstrip("\n")
