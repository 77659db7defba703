"""`trainkit report`: a self-contained report.html of a real run, checked in a real browser (headless Chromium
driven over the DevTools protocol: every image decoded, the class names on the page)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket
from conftest import free_port, make_image_folder, run_cli, tiny_config, write_yaml
from test_plots import chromium

CLASSES = ["apple", "banana_with_a_long_name", "cherry"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    make_image_folder(data / "train", dict.fromkeys(CLASSES, 8), size=12, seed=7)
    make_image_folder(data / "val", dict.fromkeys(CLASSES, 5), size=12, seed=8)
    make_image_folder(data / "other", dict.fromkeys(CLASSES, 2), size=12, seed=9)
    cfg = tiny_config(data, root / "run", num_classes=3, train={"epochs": 2}, log={"report": True})
    proc = run_cli("train", "--config", str(write_yaml(root / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {root / 'run' / 'report.html'}" in proc.stdout
    return root / "run"


def test_the_run_leaves_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to fetch
    assert not re.search(r"<(script|link)\b", page)
    for name in CLASSES:
        assert name in page
    for fact in ("parameters", "val images", "best", "wall time", "images/s", "versions", "torch"):
        assert fact in page, fact
    figures = {p.name for p in (run_dir / "report").iterdir()}
    assert {"curves.png", "confusion.png", "per_class.png", "samples.png"} <= figures
    assert len(sources) == len(figures)
    assert "run_dir:" in page  # the resolved config


def test_eval_refreshes_the_report_with_its_own_numbers(tmp_path, run_dir):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    other = run_dir.parent / "data" / "other"
    proc = run_cli("eval", "--ckpt", str(copy / "best.pt"), "--data", str(other))
    assert proc.returncode == 0, proc.stderr
    assert "6 val images" in (copy / "report.html").read_text()  # the eval's data, not the run's 15
    assert "15 val images" in (run_dir / "report.html").read_text()


def test_a_run_from_before_the_report_gets_one(tmp_path, run_dir):
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    for name in ("steps.jsonl", "report.html"):
        (old / name).unlink()
    shutil.rmtree(old / "report")
    proc = run_cli("report", str(old))
    assert proc.returncode == 0, proc.stderr
    assert (old / "report.html").is_file() and (old / "report" / "curves.png").is_file()
    bad = run_cli("report", str(tmp_path))
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


class DevTools:
    """Headless Chromium over its DevTools protocol: open a page, evaluate JavaScript in it."""

    def __init__(self, profile: Path) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
             "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as resp:
                    pages = [t for t in json.load(resp) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "chromium's DevTools did not answer"
            time.sleep(0.2)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def test_the_report_renders_in_a_real_browser(tmp_path, run_dir):
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    browser = DevTools(tmp_path / "profile")
    try:
        browser.call("Page.navigate", url=(run_dir / "report.html").as_uri())
        deadline = time.monotonic() + 30
        while browser.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        text = browser.evaluate("document.body.innerText")
        shot = browser.call("Page.captureScreenshot", format="png")["data"]
    finally:
        browser.close()
    assert len(images) >= 4 and all(done and width > 0 for done, width in images), images  # none broken
    for name in CLASSES:
        assert name in text
    assert len(shot) > 10_000


def test_cell_text_is_dark_on_light_cells_and_light_on_dark_ones():
    import numpy as np

    from trainkit.trained.report import cell_text_colours

    # the cat/dog val matrix row-normalised: 0.34 is the lightest cell (imshow's min), not a mid one
    rows = np.array([[0.66, 0.34], [0.34, 0.66]])
    assert cell_text_colours(rows) == [["white", "black"], ["black", "white"]]
    counts = np.array([[330, 170], [170, 330]])
    assert cell_text_colours(counts) == [["white", "black"], ["black", "white"]]
    assert cell_text_colours(np.array([[10, 0], [0, 10]])) == [["white", "black"], ["black", "white"]]
