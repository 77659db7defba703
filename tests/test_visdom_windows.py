"""What the visdom windows show, read back through visdom's API after real runs (issue 18, items 1 to 8):
markers, a per-step loss on a global and strictly increasing step axis after kill -9 and --resume, the
env saved on the server, integer epoch ticks, the URL line, `trainkit plot`'s replay of every window, and
the confusion matrix as people read one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_image_folder, run_cli, start_visdom, stop, tiny_config, write_yaml
from test_plots import TITLES, window

CLASSES = ["0", "1", "nine_long_class_name_of_24"[:24]]
LINES = ("loss", "acc", "lr", "images_per_s", "step_loss")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    envs = tmp_path_factory.mktemp("envs")
    proc, port = start_visdom(envs)
    try:
        yield port, envs
    finally:
        stop(proc)


def config(tmp_path: Path, port: int, env: str, epochs: int) -> Path:
    data = tmp_path / "data"
    make_image_folder(data / "train", dict.fromkeys(CLASSES, 8), size=12, seed=5)
    make_image_folder(data / "val", dict.fromkeys(CLASSES, 4), size=12, seed=6)
    cfg = tiny_config(
        data,
        tmp_path / "run",
        num_classes=3,
        train={"epochs": epochs, "log_every": 1},
        log={"visdom": {"enabled": True, "server": "http://127.0.0.1", "port": port, "env": env, "log_every": 4}},
    )
    return write_yaml(tmp_path / "c.yaml", cfg)


def xs(port: int, env: str, win: str) -> dict[str, list[float]]:
    return {t.get("name"): t["x"] for t in window(port, env, win)["content"]["data"]}


def test_a_resume_redraws_points_the_killed_run_never_sent(tmp_path, server):
    """A run killed between writing an epoch's line and sending its points: the resumed run draws the epoch
    windows from metrics.jsonl, so no epoch is missing (seen as a gap in a loaded CI run)."""
    import visdom

    port, _ = server
    env = "lost-points"
    cfg = config(tmp_path, port, env, epochs=2)
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    client = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
    client.close(win="loss", env=env)  # the points of both epochs, lost as a kill would lose them
    resumed = run_cli("train", "--config", str(cfg), "--resume", "--set", "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert xs(port, env, "loss") == {"train": [1, 2, 3], "val": [1, 2, 3]}
    assert xs(port, env, "acc") == {"train": [1, 2, 3], "val": [1, 2, 3]}  # redrawn, not doubled


def test_windows_after_a_kill_and_resume(tmp_path, server):
    port, envs = server
    env = "windows"
    cfg = config(tmp_path, port, env, epochs=14)
    metrics = tmp_path / "run" / "metrics.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    first = proc.communicate()[0]
    assert f"live plots: http://127.0.0.1:{port}/env/{env}" in first  # item 6
    assert proc.returncode == -signal.SIGKILL, first[-2000:]

    resumed = run_cli("train", "--config", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    steps = 8 * 3 // 4  # 24 images, batches of 4
    # item 2 and 3: the step loss is on the global step axis, strictly increasing, with no doubling back
    step_x = xs(port, env, "step_loss")["train"]
    assert step_x == sorted(set(step_x)) and step_x[-1] == 14 * steps, step_x
    assert all(b - a >= 4 for a, b in zip(step_x, step_x[1:-1])), step_x  # at most every log_every steps
    steps_file = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps_file] == list(range(1, 14 * steps + 1))  # cut back on resume, as metrics
    # the epoch curves hold each epoch once
    assert xs(port, env, "loss") == {"train": list(range(1, 15)), "val": list(range(1, 15))}
    for win in LINES:  # item 1: markers, so one point shows
        data = window(port, env, win)["content"]
        assert all("markers" in t["mode"] for t in data["data"]), (win, data["data"][0]["mode"])
        if win != "step_loss":  # item 5: integer epoch ticks
            axis = data["layout"]["xaxis"]
            assert axis["tickformat"] == "d" and axis["dtick"] == 2 and axis["tick0"] == 1, axis
    acc = window(port, env, "acc")["content"]
    assert acc["layout"]["yaxis"]["title"] == "%" and max(max(t["y"]) for t in acc["data"]) > 1  # percent
    assert (envs / f"{env}.json").is_file()  # item 4: saved on the server, so a restart keeps it
    # item 8: true class top to bottom, every class name a category label with room for it
    heat = window(port, env, "confusion")["content"]
    assert heat["data"][0]["x"] == CLASSES and heat["data"][0]["y"] == CLASSES
    layout = heat["layout"]
    assert layout["yaxis"]["autorange"] == "reversed" and layout["yaxis"]["title"] == "true"
    assert layout["xaxis"]["type"] == layout["yaxis"]["type"] == "category"
    assert layout["margin"]["l"] >= 7 * 24 and layout["margin"]["b"] >= 7 * 24


def test_plot_replays_every_window(tmp_path, server):
    port, _ = server
    cfg = config(tmp_path, port, "source", epochs=2)
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    run_dir = str(tmp_path / "run")
    proc = run_cli("plot", run_dir, "--env", "replayed", "--port", str(port), "--server", "http://127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    assert "the confusion matrix from" in proc.stdout and "last.pt (epoch 2)" in proc.stdout, proc.stdout
    for win, title in TITLES.items():
        assert window(port, "replayed", win)["title"] == title, win
    assert xs(port, "replayed", "step_loss")["train"] == list(range(1, 13))
    assert window(port, "replayed", "confusion")["content"]["data"][0]["x"] == CLASSES

    assert run_cli("eval", "--ckpt", f"{run_dir}/best.pt", "--out", f"{run_dir}/eval.json").returncode == 0
    again = run_cli("plot", run_dir, "--env", "replayed", "--port", str(port), "--server", "http://127.0.0.1")
    assert again.returncode == 0 and "eval.json (trainkit eval" in again.stdout, again.stdout
