"""`trainkit compare RUN RUN ...`: the resolved configs' differences key by key, the metrics at each run's best
and last epoch side by side, and every run's curves overlaid in one self-contained compare.html and PNGs."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from trainkit.errors import RunDirError
from trainkit.store.files import save_figure, write_text_atomic
from trainkit.study.runs import RunRow, differing, is_run_dir, read_row, shown
from trainkit.text import columns, fmt_metric, printable
from trainkit.trained.report import embedded_figures, html_page

METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
PANELS = (("loss", ("train_loss", "val_loss"), 1.0), ("top-1 accuracy (%)", ("train_acc", "val_acc"), 100.0),
          ("learning rate", ("lr",), 1.0))  # fmt: skip


def read_runs(paths: list[str]) -> list[RunRow]:
    rows = []
    for given in paths:
        path = Path(given)
        path = path.parent if path.is_file() else path  # a checkpoint of the run: its folder
        if not is_run_dir(path):
            raise RunDirError(
                f"compare {printable(given)}: not a run directory (no config.yaml with metrics.jsonl); give folders trainkit train wrote"
            )
        rows.append(read_row(path, path.parent))
    names = [r.run for r in rows]
    for r in rows:  # two runs of one name (runs/a/x and runs/b/x): their paths tell them apart
        if names.count(r.run) > 1:
            r.run = str(r.path)
    return rows


def curve(row: RunRow, key: str, scale: float = 1.0) -> list[tuple[int, float]]:
    """(epoch, value) of a run, one point per epoch: a resumed run's repeated epoch keeps its latest record."""
    points: dict[int, float] = {}
    for r in row.records:
        if isinstance(r.get(key), (int, float)) and isinstance(r.get("epoch"), int):
            points[r["epoch"]] = float(r[key]) * scale
    return sorted(points.items())


def _at(row: RunRow, epoch: int | None) -> dict[str, Any]:
    found = [r for r in row.records if r.get("epoch") == epoch]
    return found[-1] if found else {}


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "epoch":
        return str(v)
    if key == "lr":
        return f"{v:.3g}"
    return fmt_metric(key, v)


def text(rows: list[RunRow]) -> str:
    keys = differing(rows)
    names = [r.run for r in rows]
    parts = ["config differences:" if keys else "config differences: none (the runs' resolved configs are equal)"]
    if keys:
        parts.append(columns([["key", *names], *([k, *(shown(r.config.get(k)) for r in rows)] for k in keys)]))
    for title, pick in (("at the best epoch", lambda r: r.best_epoch), ("at the last epoch", lambda r: r.epoch)):
        monitor = {r.monitor for r in rows}
        head = f"metrics {title}" + (f" (best by {rows[0].monitor})" if "best" in title and len(monitor) == 1 else "")
        table = [["metric", *names], *([m, *(_fmt(m, _at(r, pick(r)).get(m)) for r in rows)] for m in METRICS)]
        parts += ["", head + ":", columns(table)]
    return "\n".join(parts)


def figures(rows: list[RunRow], folder: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for title, keys, scale in PANELS:
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, row in enumerate(rows):
            for key in keys:
                pts = curve(row, key, scale)
                if pts:
                    style = "--" if key.startswith("train") else "-"
                    label = row.run + (f" {key.split('_')[0]}" if len(keys) > 1 else "")
                    ax.plot(*zip(*pts), style, marker="o", ms=3, color=colours[i % len(colours)], label=label)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        name = title.split(" ")[0].replace("top-1", "accuracy") + ".png"
        name = {"learning.png": "lr.png"}.get(name, name)
        save_figure(fig, folder / name)
        plt.close(fig)
        what = "train dashed, val solid" if len(keys) > 1 else "per epoch"
        out.append((name, f"{title}: every run ({what})"))
    return out


def write_compare(rows: list[RunRow], out_dir: Path) -> Path:
    """OUT/compare.html (figures embedded) and OUT/compare/*.png; returns the HTML's path."""
    folder = out_dir / "compare"
    folder.mkdir(parents=True, exist_ok=True)
    figs = figures(rows, folder)
    esc = html.escape
    body = f"<h1>{len(rows)} runs</h1><ul>"
    body += "".join(f"<li>{esc(r.run)}: {esc(r.status)} ({esc(str(r.path))})</li>" for r in rows)
    body += f"</ul><pre>{esc(text(rows))}</pre>{embedded_figures(folder, figs)}"
    page = out_dir / "compare.html"
    write_text_atomic(page, html_page("trainkit compare", body))
    return page
