"""`trainkit report RUN_DIR`: one self-contained `report.html` (figures embedded) and the same figures as PNG
files in `RUN_DIR/report/`, from the run's files and its best checkpoint; no visdom server needed.

The confusion matrix, per-class precision and recall and the most-confused pairs come from one pass of the
checkpoint over its val data (image by image, so each pair can show the images it got wrong); the curves
from metrics.jsonl and steps.jsonl; the sample grid from samples.png. Figures are drawn with matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.models.table import SOURCES
from trainkit.run import metrics
from trainkit.store.files import save_figure, write_text_atomic
from trainkit.store.rundir import RunRecord, load_run
from trainkit.trained.evaluate import Predictions, test_line, val_predictions
from trainkit.trained.load import Trained, load_trained

PAIRS = 5
PER_PAIR = 8


def _figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    save_figure(fig, path)
    plt.close(fig)


def curves(run: RunRecord, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = run.records
    epochs = [x["epoch"] for x in r]
    panels = [("loss", ("train_loss", "val_loss"), 1), ("top-1 accuracy (%)", ("train_acc", "val_acc"), 100),
              ("learning rate", ("lr",), 1)]  # fmt: skip
    fig, axes = plt.subplots(1, 3 + bool(run.steps), figsize=(5 * (3 + bool(run.steps)), 3.6))
    for ax, (title, keys, scale) in zip(axes, panels):
        for key in keys:
            pts = [(e, x[key] * scale) for e, x in zip(epochs, r) if x.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key.split("_")[0] if len(keys) > 1 else key)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    if run.steps:
        ax = axes[-1]
        ax.plot([s["step"] for s in run.steps], [s["loss"] for s in run.steps], lw=1)
        ax.set(title="train loss per step", xlabel="step")
        ax.grid(alpha=0.3)
    _figure(fig, path)


def cell_text_colours(m: np.ndarray, cmap: str = "Blues") -> list[list[str]]:
    """Black or white per cell, by the luminance of the colour the cell is drawn in (imshow spreads the
    colour map from the matrix's min to its max: half the max is not the middle of it)."""
    import matplotlib
    from matplotlib.colors import Normalize

    rgba = matplotlib.colormaps[cmap](Normalize(vmin=float(m.min()), vmax=float(m.max()))(m))
    luminance = rgba[..., :3] @ np.array([0.2126, 0.7152, 0.0722])  # of sRGB, as WCAG reckons it
    return np.where(luminance > 0.5, "black", "white").tolist()


def confusion_figure(conf: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    n = len(classes)
    side = max(4.0, 0.45 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2, side), layout="constrained")
    rows = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    for ax, m, title, fmt in ((axes[0], conf, "counts", "d"), (axes[1], rows, "row-normalised (recall)", ".2f")):
        im = ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        ax.set(title=title, xlabel="predicted", ylabel="true")
        if n <= 20:
            colours = cell_text_colours(m)
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=8, color=colours[i][j])
        fig.colorbar(im, ax=ax, fraction=0.046)
    _figure(fig, path)


def per_class_figure(pc: dict[str, list[float]], classes: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(classes) + 2), 3.6))
    ax.bar(x - 0.2, [100 * v for v in pc["precision"]], 0.4, label="precision")
    ax.bar(x + 0.2, [100 * v for v in pc["recall"]], 0.4, label="recall")
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set(ylim=(0, 100), ylabel="%", title="per class")
    ax.legend()
    _figure(fig, path)


def pair_figure(p: Predictions, idx: list[int], classes: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(idx), figsize=(1.9 * len(idx), 2.3), squeeze=False)
    transform, p.images.transform = p.images.transform, None
    try:
        for ax, i in zip(axes[0], idx):
            img = p.images[int(i)][0].convert("RGB")
            img.thumbnail((128, 128))  # a thumbnail: the report stays small
            ax.imshow(np.asarray(img))
            ax.set_title(f"{classes[p.true[i]]} -> {classes[p.pred[i]]}\n{100 * p.prob[i]:.0f}%", fontsize=8)
            ax.axis("off")
    finally:
        p.images.transform = transform
    _figure(fig, path)


def pretrained_line(p: dict[str, Any]) -> str:
    """The weights a run started from: their name, ImageNet top-1, parameter count and recipe."""
    top1 = f", ImageNet top-1 {p['top1']:.1f}%" if isinstance(p.get("top1"), (int, float)) else ""
    params = f", {p['params']:,} parameters" if isinstance(p.get("params"), int) else ""
    return f"{p.get('name')}{top1}{params}" + (f"; recipe {p['recipe']}" if p.get("recipe") else "")


def _test_json(run_dir: Path) -> dict[str, Any] | None:
    """test.json of a run with a test set (None: it has none, or it is unreadable)."""
    try:
        found = json.loads((run_dir / "test.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and {"checkpoint", "epoch", "samples", "test_acc"} <= set(found) else None


def facts(run: RunRecord, t: Trained, n_val: int) -> list[tuple[str, str]]:
    r, ckpt, cfg = run.records, t.ckpt, t.cfg
    monitor = cfg.train.monitor
    best = max((x for x in r if x.get(monitor) is not None), key=lambda x: x[monitor] * (1 if cfg.train.monitor_mode == "max" else -1), default=None)  # fmt: skip
    params = sum(p.numel() for p in t.model.parameters())
    model = SOURCES[cfg.model.source].describe(cfg.model)
    ips = [x["images_per_s"] for x in r if x.get("images_per_s")]
    versions = ", ".join(f"{k} {v}" for k, v in ckpt.get("versions", {}).items())
    return [
        ("name", cfg.name),
        ("dataset", f"{cfg.data.dataset}: {len(t.classes)} classes, {n_val} val images"),
        ("model", f"{model}, {params:,} parameters"),
        *([("pretrained", pretrained_line(ckpt["pretrained"]))] if isinstance(ckpt.get("pretrained"), dict) else []),
        *(
            [("test", test_line({**t_json, "val_acc": t_json.get("test_acc")}))]
            if (t_json := _test_json(run.run_dir))
            else []
        ),
        ("epochs", f"{r[-1]['epoch']} of {cfg.train.epochs}"),
        ("best", f"{monitor} {best[monitor]:.4f} at epoch {best['epoch']}" if best else "-"),
        ("weights shown", f"{t.path} (epoch {t.epoch}, {t.weights})"),
        ("wall time", f"{sum(x.get('time', 0.0) for x in r):.0f} s of training"),
        ("images/s", f"{np.median(ips):.0f} (median over epochs)" if ips else "-"),
        ("device", str(cfg.device)),
        ("versions", f"{versions}; python {platform.python_version()}"),
    ]


def write_report(
    run_dir: str | Path, ckpt: str | Path | None = None, data_dir: str | None = None, trust_code: bool = False
) -> Path:
    """Write RUN_DIR/report.html and RUN_DIR/report/*.png; returns the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    run = load_run(Path(run_dir))
    ckpt_path = (
        Path(ckpt) if ckpt else next(p for p in (run.run_dir / "best.pt", run.run_dir / "last.pt") if p.is_file())
    )
    t = load_trained(ckpt_path, data_dir=data_dir, device="cpu", trust_code=trust_code)
    p = val_predictions(t)
    classes, n = t.classes, len(t.classes)
    conf = np.zeros((n, n), dtype=np.int64)
    np.add.at(conf, (p.true, p.pred), 1)
    pc = metrics.per_class(conf)
    folder = run.run_dir / "report"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    figures: list[tuple[str, str]] = []  # (file name, caption)
    curves(run, folder / "curves.png")
    figures.append(("curves.png", "Loss, top-1 accuracy and learning rate per epoch (train and val)"))
    confusion_figure(conf, classes, folder / "confusion.png")
    figures.append(("confusion.png", f"Confusion matrix on the {len(p.true)} val images (rows: true class)"))
    per_class_figure(pc, classes, folder / "per_class.png")
    figures.append(("per_class.png", "Precision and recall per class"))
    for k, (a, b, count) in enumerate(metrics.most_confused(conf, classes, PAIRS), start=1):
        ia, ib = classes.index(a), classes.index(b)
        wrong = np.flatnonzero((p.true == ia) & (p.pred == ib))
        wrong = wrong[np.argsort(-p.prob[wrong])][:PER_PAIR]
        pair_figure(p, wrong.tolist(), classes, folder / f"confused_{k}.png")
        figures.append((f"confused_{k}.png", f"{a} taken for {b}: {count} images (the most confident {len(wrong)})"))
    if run.samples is not None:
        shutil.copy(run.samples, folder / "samples.png")
        figures.append(("samples.png", "Training samples after the train transforms"))
    page = render(t.cfg.name, run, facts(run, t, len(p.true)), figures, folder, pc, classes, conf)
    out = run.run_dir / "report.html"
    write_text_atomic(out, page)
    return out


def render(
    name: str,
    run: RunRecord,
    fact_rows: list[tuple[str, str]],
    figures: list[tuple[str, str]],
    folder: Path,
    pc: dict[str, list[float]],
    classes: list[str],
    conf: np.ndarray,
) -> str:
    esc = html.escape
    acc = np.trace(conf) / max(conf.sum(), 1)
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in fact_rows)
    table = "".join(
        f"<tr><td>{esc(c)}</td><td>{100 * pc['precision'][i]:.1f}%</td><td>{100 * pc['recall'][i]:.1f}%</td>"
        f"<td>{pc['support'][i]}</td></tr>"
        for i, c in enumerate(classes)
    )
    figs = embedded_figures(folder, figures)
    buf = io.StringIO()
    buf.write(f"<h1>{esc(name)}</h1><p>{esc(str(run.run_dir))}: val top-1 accuracy {100 * acc:.2f}%</p>")
    buf.write(f"<h2>Run</h2><table>{rows}</table>")
    buf.write("<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>images</th></tr>")
    buf.write(f"{table}</table><h2>Figures</h2>{figs}")
    buf.write(f"<h2>Config</h2><pre>{esc(run.config_text)}</pre>")
    return html_page(f"trainkit report: {name}", buf.getvalue())


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "img{max-width:100%}figure{margin:1.5em 0;break-inside:avoid}figcaption{color:#555}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:85%}"
)


def embedded_figures(folder: Path, figures: list[tuple[str, str]]) -> str:
    """The PNGs (file name, caption) in `folder` as <figure>s with the images inline: the page stands alone."""
    esc = html.escape
    return "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode((folder / name).read_bytes()).decode()}" '
        f'alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for name, caption in figures
    )


def html_page(title: str, body: str) -> str:
    """One self-contained HTML page in the report's style (the report, compare.html, sweep.html)."""
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
    return f"{head}</head><body>{body}</body></html>\n"
