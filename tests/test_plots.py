"""plots: live plots on a real visdom server, read back through visdom's own API and a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import visdom
from conftest import free_port, run_cli, tiny_config, wait_http, write_yaml

from trainkit.sinks import visdom_assets

TITLES = {
    "loss": "loss",
    "acc": "top-1 accuracy",
    "lr": "learning rate",
    "images_per_s": "images/s",
    "step_loss": "train loss per step",
    "confusion": "confusion matrix",
    "samples": "training samples",
    "config": "config",
}


def client(port: int) -> visdom.Visdom:
    return visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)


def window(port: int, env: str, win: str) -> dict:
    return json.loads(client(port).get_window_data(win, env=env))


def traces(port: int, env: str, win: str) -> dict[str, int]:
    """Trace name -> number of points."""
    return {t.get("name"): len(t["x"]) for t in window(port, env, win)["content"]["data"]}


def visdom_config(tmp_path: Path, tiny_data: Path, port: int, env: str, **train) -> Path:
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        train={"epochs": 2, "log_every": 2, **train},
        log={"visdom": {"enabled": True, "server": "http://127.0.0.1", "port": port, "env": env, "log_every": 2}},
    )
    return write_yaml(tmp_path / "vis.yaml", cfg)


def test_training_draws_every_window_and_resume_continues_them(tmp_path, tiny_data, visdom_server):
    port, env = visdom_server, "tiny-live"
    cfg = visdom_config(tmp_path, tiny_data, port, env)
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "no visdom server" not in proc.stderr
    vis = client(port)
    for win, title in TITLES.items():
        assert vis.win_exists(win, env=env), win
        assert window(port, env, win)["title"] == title
    assert traces(port, env, "loss") == {"train": 2, "val": 2}
    assert traces(port, env, "acc") == {"train": 2, "val": 2}
    assert traces(port, env, "lr") == {"lr": 2}
    assert traces(port, env, "images_per_s") == {"images_per_s": 2}
    assert traces(port, env, "step_loss") == {"train": 6}  # 6 steps per epoch, logged every 2 steps
    heat = window(port, env, "confusion")["content"]["data"][0]
    assert heat["x"] == ["cat", "dog"] and sum(map(sum, heat["z"])) == 10  # every val image once
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert window(port, env, "loss")["content"]["data"][0]["y"] == pytest.approx([r["train_loss"] for r in records])

    proc = run_cli("train", "--config", str(cfg), "--resume", "--set", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert traces(port, env, "loss") == {"train": 3, "val": 3}  # the same window, appended
    assert window(port, env, "loss")["content"]["data"][0]["x"] == [1, 2, 3]


def test_training_without_a_server_warns_once_and_loses_nothing(tmp_path, tiny_data):
    cfg = visdom_config(tmp_path, tiny_data, free_port(), "nobody")
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "no visdom server" in warnings[0] and "trainkit visdom --port" in warnings[0]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_plot_replays_a_finished_run(tmp_path, tiny_data, visdom_server):
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 2, "log_every": 2})
    assert run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))).returncode == 0
    proc = run_cli(
        "plot", str(tmp_path / "run"), "--env", "replayed", "--port", str(visdom_server), "--server", "http://127.0.0.1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "sent 2 epochs" in proc.stdout
    assert traces(visdom_server, "replayed", "loss") == {"train": 2, "val": 2}
    assert window(visdom_server, "replayed", "config")["title"] == "config"
    down = run_cli("plot", str(tmp_path / "run"), "--port", str(free_port()))
    assert down.returncode == 1 and "no visdom server" in down.stderr


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=15000",
    ]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_page_renders_the_windows_in_a_real_browser(tmp_path, tiny_data, visdom_server):
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    env = "tiny-browser"
    assert run_cli("train", "--config", str(visdom_config(tmp_path, tiny_data, visdom_server, env))).returncode == 0
    url = f"http://127.0.0.1:{visdom_server}/env/{env}"
    dom = browser("--dump-dom", url, tmp_path=tmp_path).stdout
    for title in TITLES.values():
        assert title in dom, title
    shot = tmp_path / "visdom.png"
    browser("--window-size=1400,1000", f"--screenshot={shot}", url, tmp_path=tmp_path)
    assert shot.stat().st_size > 10_000


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_trainkit_visdom_serves_the_page_offline_on_loopback(tmp_path):
    assert visdom_assets.missing(visdom_assets.static_dir()) == []  # `make install` laid every asset
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "visdom", "--port", str(port), "--env-path", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/", timeout=30), "the server did not answer"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read().decode()
        assert "<title>visdom</title>" in page.lower() or "visdom" in page
        for _, _, dest in visdom_assets.ASSETS:
            if "#" in dest or dest == "fonts/classnames":
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{dest}") as resp:
                assert resp.status == 200 and len(resp.read()) > 0, dest
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    finally:
        proc.terminate()
        proc.wait(10)
    with pytest.raises(OSError):  # SIGTERM stopped the server itself: `trainkit visdom` leaves nothing running
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_the_page_loads_under_current_tornado_with_and_without_a_base_url(tmp_path, visdom_server):
    import tornado

    assert tuple(int(x) for x in tornado.version.split(".")[:3]) >= (6, 5, 8)
    with urllib.request.urlopen(f"http://127.0.0.1:{visdom_server}/", timeout=10) as resp:
        assert resp.status == 200 and 'href="/user/style.css"' in resp.read().decode()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "visdom.server", "-port", str(port), "-bind_local", "-env_path", str(tmp_path),
         "-base_url", "/vis"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_http(f"http://127.0.0.1:{port}/vis/")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/vis/", timeout=10) as resp:
            assert 'href="/vis/user/style.css"' in resp.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/vis/user/style.css", timeout=10) as resp:
            assert resp.status == 200
    finally:
        server.terminate()
        server.wait(10)


def test_the_template_rewrite_is_idempotent_and_checked(tmp_path):
    page = tmp_path / visdom_assets.TEMPLATE
    page.write_text(f"<head>\n    <link rel='x' {visdom_assets.TEMPLATE_ORIGINAL}>\n</head>\n")
    assert visdom_assets.patch_template(tmp_path) is True
    once = page.read_text()
    assert visdom_assets.TEMPLATE_PATCHED in once and visdom_assets.TEMPLATE_ORIGINAL not in once
    assert visdom_assets.patch_template(tmp_path) is False and page.read_text() == once
    page.write_text("<head>another page</head>\n")
    with pytest.raises(SystemExit, match="not the page trainkit knows"):
        visdom_assets.patch_template(tmp_path)
