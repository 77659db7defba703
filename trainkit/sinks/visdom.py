"""Live plots on a visdom server: the only module that imports visdom.

`VisdomSink` is a `sinks.Sink`. Every
update is put on a bounded queue and sent by one background thread, so a slow
or missing server never blocks or breaks training: when the queue is full the
update is dropped (and counted). When the server cannot be reached at start,
one warning says so and how to start it, and the sink does nothing more.

Window ids are fixed names (`loss`, `acc`, ...), so a resumed run appends to
the same curves instead of opening new windows.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import os
import queue
import sys
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trainkit.errors import TrainingError
from trainkit.sinks.base import RunInfo, Sink, SinkContext, SinkKind, StepWindow
from trainkit.sinks.schema import VisdomConfig
from trainkit.store.rundir import RunRecord, read_jsonl

WINDOWS = {
    "loss": "loss",
    "acc": "top-1 accuracy",
    "lr": "learning rate",
    "images_per_s": "images/s",
    "step_loss": "train loss per step",
    "confusion": "confusion matrix",
    "samples": "training samples",
    "config": "config",
}
EPOCH_TRACES = {
    "loss": ("train_loss", "val_loss"),
    "acc": ("train_acc", "val_acc"),
    "lr": ("lr",),
    "images_per_s": ("images_per_s",),
}


def connect(server: str, port: int, env: str) -> tuple[Any | None, str]:
    """(a visdom client, "") or (None, why not: no server, or one that refused the login).

    Credentials come from VISDOM_USERNAME/PASSWORD."""
    import visdom

    logging.getLogger("visdom").setLevel(logging.ERROR)
    user = os.environ.get("VISDOM_USERNAME") or None
    where = f"{server}:{port}"
    try:
        make: Any = visdom.Visdom  # its stub (__init__.pyi) lacks the username and password it takes
        client = make(
            server=server,
            port=port,
            env=env,
            use_incoming_socket=False,
            raise_exceptions=True,  # failures surface as exceptions the sink's thread counts, never as prints
            username=user,
            password=os.environ.get("VISDOM_PASSWORD") if user else None,
        )
        if client.check_connection():
            return client, ""
    except RuntimeError:  # visdom's "Authentication failed"
        return None, (
            f"the visdom server at {where} refused the login of VISDOM_USERNAME={user}; check VISDOM_USERNAME "
            "and VISDOM_PASSWORD against the ones the server was started with"
        )
    except (ConnectionError, OSError):
        return None, f"no visdom server at {where}; start one with `{start_command(server, port)}`"
    return None, (  # it answered, but refused the request: a server with a login, or not visdom
        f"the visdom server at {where} refused the request"
        + (" for this login" if user else "; if it asks for a login, set VISDOM_USERNAME and VISDOM_PASSWORD")
    )


def start_command(server: str, port: int) -> str:
    return f"trainkit visdom --port {port}" + (
        "" if "localhost" in server or "127.0.0.1" in server else " --host 0.0.0.0"
    )


class VisdomSink(Sink):
    """Plots a run into the visdom env `env`; never raises into the training loop.

    Epoch curves (x: epoch, integer ticks) and the train loss per step (x: the global step; each point
    the mean loss of the steps since the one before, at most every `log.visdom.log_every` steps) are
    drawn with markers, so one point shows. A resumed run first redraws the epoch curves from
    metrics.jsonl and cuts the step curve back to where its checkpoint stands, so a repeated stretch
    replaces the old one instead of doubling back. The env is saved on the server at each epoch's end, so
    a restarted server still has it.
    """

    def __init__(
        self,
        cfg: VisdomConfig,
        env: str,
        resume: bool,
        warn: Callable[[str], None],
        maxsize: int = 256,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.env = env
        self.classes: list[str] = []
        self.resume = resume
        self.every = cfg.log_every
        self.epochs = 1
        self.steps = 1  # per epoch
        self.window = StepWindow(cfg.log_every)
        self.ready: set[str] = set()  # windows this process has drawn into
        self.dropped = 0
        self.errors = 0
        self.client: Any
        self.client, self.why = connect(cfg.server, cfg.port, env)
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.thread: threading.Thread | None = None
        if self.client is None:
            warn(
                f"warning: {self.why}; training goes on without live plots (metrics.jsonl has them: "
                "`trainkit plot RUN_DIR` draws them later; set log.visdom.enabled: false to silence this)"
            )
            return
        self.url = f"{cfg.server.rstrip('/')}:{cfg.port}/env/{urllib.parse.quote(env)}"
        if say is not None:
            say(f"live plots: {self.url}")
        self.thread = threading.Thread(target=self._work, name="trainkit-visdom", daemon=True)
        self.thread.start()

    # ---- the background thread

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a plotting failure must never reach training
                self.errors += 1

    def _submit(self, job: Callable[[], Any]) -> None:
        if self.thread is None:
            return
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    # ---- drawing (runs on the thread)

    def _opts(self, win: str) -> dict[str, Any]:
        xlabel = "step" if win == "step_loss" else "epoch"
        axis: dict[str, Any] = {"title": xlabel, "tickformat": "d"}
        if xlabel == "epoch":  # integer ticks: 1, 2, 3 (or every few epochs on a long run)
            axis |= {"tick0": 1, "dtick": max(1, math.ceil(self.epochs / 10))}
        yaxis = {"title": "%", "range": [0, 100]} if win == "acc" else {"title": WINDOWS[win]}
        return {
            "title": WINDOWS[win],
            "showlegend": True,
            "markers": True,
            "markersize": 6,
            "layoutopts": {"plotly": {"xaxis": axis, "yaxis": yaxis}},
        }

    def _line(self, win: str, xs: Sequence[float], ys: Sequence[float | None], name: str) -> None:
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y)]
        if not pts:
            return
        X, Y = np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)
        opts = self._opts(win)
        if win not in self.ready:
            self.ready.add(win)
            if not (self.resume and self.client.win_exists(win, env=self.env)):
                self.client.line(X=X, Y=Y, win=win, env=self.env, name=name, opts=opts)  # a new run starts afresh
                return
        self.client.line(X=X, Y=Y, win=win, env=self.env, name=name, update="append", opts=opts)

    def _cut(self, win: str, last: float) -> None:
        """Keep the points of `win` up to x = `last` (where the resumed checkpoint stands)."""
        raw = self.client.get_window_data(win=win, env=self.env)
        if not raw:
            return
        traces = json.loads(raw)["content"]["data"]
        self.client.close(win=win, env=self.env)
        self.ready.discard(win)
        for t in traces:
            kept = [(x, y) for x, y in zip(t.get("x", []), t.get("y", [])) if x is not None and x <= last]
            self._line(win, [x for x, _ in kept], [y for _, y in kept], t.get("name") or win)

    def _redraw(self, records: list[dict[str, Any]]) -> None:
        """Draw the epoch curves afresh from the run's records, up to where the resumed checkpoint stands."""
        for win in EPOCH_TRACES:
            self.client.close(win=win, env=self.env)
            self.ready.discard(win)
        for win, xs, ys, name in _epoch_traces(records):
            self._line(win, xs, ys, name)

    def _save(self) -> None:
        self.client.save([self.env])

    # ---- the sink interface

    def start(self, info: RunInfo) -> None:
        self.classes = list(info.classes)
        self.steps = max(1, info.steps_per_epoch)
        self.epochs = max(1, info.epochs)
        self.window = StepWindow(self.every, info.done_steps)
        if info.resumed:
            # the epoch curves from metrics.jsonl, the truth: a killed run may have died before its last points
            # went; the step curve (drawn less often than steps.jsonl is written) and, without the file (a
            # checkpoint from elsewhere), the epoch curves keep the server's points up to the checkpoint
            records = [r for r in read_jsonl(info.run_dir / "metrics.jsonl") if r.get("epoch", 0) <= info.done_epochs]
            if records:
                self._submit(functools.partial(self._redraw, records))
            for win in ["step_loss"] if records else [*EPOCH_TRACES, "step_loss"]:
                last = info.done_steps if win == "step_loss" else info.done_epochs
                self._submit(functools.partial(self._cut, win, last))
        self.text(info.config_text)
        if info.grid is not None:
            self.images(info.grid)

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs, self.steps = epochs, max(1, steps)
        self.window.begin_epoch()

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        global_step = (epoch - 1) * self.steps + step
        loss = self.window.add(global_step, stats, last=epoch == self.epochs and step == steps)
        if loss is not None:
            self._submit(lambda: self._line("step_loss", [global_step], [loss], "train"))

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        self.epoch_curves([record])
        if confusion is not None:
            self.confusion(confusion, self.classes)
        self._submit(self._save)

    def epoch_curves(self, records: list[dict[str, Any]]) -> None:
        """Append each record's values to the epoch windows (accuracy in percent, as the console prints it)."""
        for win, xs, ys, name in _epoch_traces(records):
            self._submit(functools.partial(self._line, win, xs, ys, name))

    def step_curve(self, steps: list[float], losses: list[float]) -> None:
        self._submit(functools.partial(self._line, "step_loss", steps, losses, "train"))

    def confusion(self, matrix: np.ndarray, classes: list[str]) -> None:
        """True class top to bottom, predicted left to right: the diagonal from the top-left corner."""
        margin = 16 + 7 * min(24, max(len(c) for c in classes))  # room for names up to 24 characters
        axis = {"type": "category", "automargin": True}
        opts = {
            "title": WINDOWS["confusion"],
            "columnnames": list(classes),
            "rownames": list(classes),
            "colormap": "Viridis",
            "marginleft": margin + 40,
            "marginbottom": margin + 40,
            "layoutopts": {
                "plotly": {
                    "xaxis": {**axis, "title": "predicted", "tickangle": -45},
                    "yaxis": {**axis, "title": "true", "autorange": "reversed"},
                }
            },
        }
        m = np.asarray(matrix, dtype=float)  # rows: true class, columns: predicted class
        self._submit(lambda: self.client.heatmap(X=m, win="confusion", env=self.env, opts=opts))

    def images(self, grid: torch.Tensor | np.ndarray) -> None:
        arr = grid.detach().cpu().numpy() if isinstance(grid, torch.Tensor) else grid
        opts = {"title": WINDOWS["samples"], "width": 360, "height": 380}
        self._submit(lambda: self.client.image(arr, win="samples", env=self.env, opts=opts))

    def text(self, yaml_text: str) -> None:
        body = f"<pre>{html.escape(yaml_text)}</pre>"
        self._submit(lambda: self.client.text(body, win="config", env=self.env, opts={"title": WINDOWS["config"]}))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to `timeout` seconds), save the env, then stop the thread."""
        if self.thread is None:
            return
        self._submit(self._save)
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)
        self.thread = None


def _epoch_traces(records: list[dict[str, Any]]) -> list[tuple[str, list[float], list[float | None], str]]:
    """(window, epochs, values, trace name) of each epoch curve the records hold; accuracy in percent."""
    xs = [r["epoch"] for r in records]
    out = []
    for win, keys in EPOCH_TRACES.items():
        for key in keys:
            ys = [r.get(key) for r in records]
            ys = [None if y is None else (100 * y if win == "acc" else y) for y in ys]
            if any(y is not None for y in ys):
                out.append((win, xs, ys, key.split("_")[0] if len(keys) > 1 else win))
    return out


def replay(run: RunRecord, cfg: VisdomConfig, env: str) -> list[str]:
    """Send a finished run to visdom (`trainkit plot`): the epoch curves, the step loss, the confusion matrix,
    the sample grid and the config. Returns what was sent, in words."""
    sink = VisdomSink(cfg, env, resume=False, warn=lambda msg: None)
    if sink.client is None:
        raise TrainingError(sink.why)
    sent = [f"{len(run.records)} epochs"]
    sink.epochs = max(r["epoch"] for r in run.records)
    sink.text(run.config_text)
    sink.epoch_curves(run.records)
    if run.steps:
        sink.step_curve([r["step"] for r in run.steps], [r["loss"] for r in run.steps])
        sent.append(f"{len(run.steps)} step-loss points")
    if run.confusion is not None and run.classes:
        sink.confusion(np.asarray(run.confusion), run.classes)
        sent.append(f"the confusion matrix from {run.confusion_source}")
    if run.samples is not None:
        from PIL import Image

        with Image.open(run.samples) as img:
            sink.images(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
        sent.append("the sample grid")
    sink.close(timeout=60.0)
    if sink.dropped or sink.errors:
        raise TrainingError(f"visdom at {sink.url}: {sink.dropped + sink.errors} updates failed; run it again")
    return sent


def _make(c: SinkContext) -> Sink | None:
    if not c.log.visdom.enabled:
        return None
    warn = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    return VisdomSink(c.log.visdom, c.visdom_env, resume=c.resumed, warn=warn, say=c.say)


SINK = SinkKind(make=_make)
