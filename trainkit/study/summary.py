"""The end of a sweep: the table of its trials, `best.yaml` (the best trial's full config, which `trainkit train
--config` takes as it is) and `sweep.html` (the study's history and parameter importances, drawn by
`optuna.visualization.matplotlib`, with their PNGs in `sweep/`)."""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainkit.store.files import save_figure, write_text_atomic
from trainkit.study.runs import shown
from trainkit.study.space import setting
from trainkit.study.sweep import Sweep
from trainkit.text import columns, fmt_metric
from trainkit.trained.report import embedded_figures, html_page


def _duration(t: Any) -> str:
    if t.datetime_start is None or t.datetime_complete is None:
        return "-"
    s = int((t.datetime_complete - t.datetime_start).total_seconds())
    return f"{s // 60}m{s % 60:02d}s"


def trial_table(sw: Sweep, study: Any) -> str:
    monitor = sw.cfg.train.monitor
    rows: list[list[str]] = [["trial", "state", monitor, "epochs", "time", "run", *(p.key for p in sw.space)]]
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.value is not None and t.value == t.value else None
        if value is None and t.intermediate_values:  # a pruned trial: its last reported value
            value = t.intermediate_values[max(t.intermediate_values)]
        state = t.state.name.lower() + (f" ({t.user_attrs['stopped']})" if "stopped" in t.user_attrs else "")
        retried = t.system_attrs.get("failed_trial")
        state += f", retry of {retried}" if retried is not None else ""
        epochs = str(max(t.intermediate_values)) if t.intermediate_values else "-"
        run = Path(str(t.user_attrs.get("run_dir", "-"))).name
        params = [shown(t.params[p.key]) if p.key in t.params else "-" for p in sw.space]
        rows.append([str(t.number), state, fmt_metric(monitor, value), epochs, _duration(t), run, *params])
    return columns(rows)


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value == t.value]
    if not done:
        return None
    return max(done, key=lambda t: t.value) if study.direction.name == "MAXIMIZE" else min(done, key=lambda t: t.value)


def write_best(sw: Sweep, trial: Any) -> Path:
    """best.yaml: the best trial's resolved config, named `<study>-best` and without its run_dir (a run of its own)."""
    run_dir = Path(str(trial.user_attrs["run_dir"]))
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    raw["name"], raw["run_dir"] = f"{sw.study}-best", None
    if isinstance(raw.get("log", {}).get("mlflow"), dict):
        raw["log"]["mlflow"]["parent_run"] = None
    head = (
        f"# the best trial of study {sw.study}: trial {trial.number} ({run_dir}), "
        f"{sw.cfg.train.monitor} {fmt_metric(sw.cfg.train.monitor, trial.value)}\n"
        f"# {' '.join(setting(k, v) for k, v in trial.params.items())}\n"
    )
    out = sw.folder / "best.yaml"
    write_text_atomic(out, head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=100))
    return out


def write_pictures(sw: Sweep, study: Any, table: str) -> Path:
    """sweep.html with the optimization history, the intermediate values and the parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    folder = sw.folder / "sweep"
    folder.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, caption, draw in (
        ("history.png", "Optimization history: each trial's value and the best so far", vis.plot_optimization_history),
        ("intermediate.png", f"{sw.cfg.train.monitor} per epoch of every trial (pruned ones stop early)",
         vis.plot_intermediate_values),
        ("importances.png", "Parameter importances (fANOVA)", vis.plot_param_importances),
    ):  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
        except Exception as exc:  # noqa: BLE001 - e.g. importances need two finished trials: said, not fatal
            notes.append(
                f"{caption}: not drawn ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
            )
            continue
        first: Any = ax if hasattr(ax, "figure") else np.ravel(np.asarray(ax, dtype=object))[0]  # an Axes or an array
        fig = first.figure
        save_figure(fig, folder / name)
        plt.close(fig)
        figures.append((name, caption))
    esc = html.escape
    body = f"<h1>Study {esc(sw.study)}</h1><p>{esc(sw.where)}; base config {esc(sw.base)}</p>"
    body += f"<h2>Trials</h2><pre>{esc(table)}</pre>{embedded_figures(folder, figures)}"
    body += "".join(f"<p>{esc(n)}</p>" for n in notes)
    out = sw.folder / "sweep.html"
    write_text_atomic(out, html_page(f"trainkit sweep: {sw.study}", body))
    return out
