"""Shared fixtures: real image files on disk, tiny configs, and the real CLI in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from forked_cli import STARTUP, ForkedCli, same_startup_env
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
COLORS = [(200, 40, 40), (40, 40, 200), (40, 180, 40), (200, 200, 40), (180, 40, 180)]


def make_image_folder(
    root: Path, classes: dict[str, int], size: int = 16, ext: str = "png", seed: int = 0, mode: str = "RGB"
) -> Path:
    """Write real image files, one folder per class; each class has its own colour, so it is learnable."""
    rng = np.random.default_rng(seed)
    for i, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(count):
            base = np.array(COLORS[i % len(COLORS)], dtype=np.float64)
            pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels, "RGB")
            if mode != "RGB":
                img = img.convert(mode)
            img.save(folder / f"{j:03d}.{ext}")
    return root


class Payload:
    """A pickled object that, if ever unpickled, creates the file `sentinel` (a hostile checkpoint's payload)."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def tiny_config(data_root: Path, run_dir: Path, num_classes: int = 2, **sections) -> dict:
    """A small, fast config over an image folder made by `make_image_folder`."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "run_dir": str(run_dir),
        "data": {
            "dataset": "imagefolder",
            "train": str(data_root / "train"),
            "val": str(data_root / "val"),
            "batch_size": 4,
            "num_workers": 0,
            "transforms": {"train": ["ToTensor"]},
        },
        "model": {
            "sequential": [
                {"Conv2d": [3, 4, 3, 1, 1]},
                {"ReLU": {}},
                {"AdaptiveAvgPool2d": [1]},
                "Flatten",
                {"Linear": [4, num_classes]},
            ]
        },
        "optim": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 2, "log_every": 2},
        "log": {"visdom": {"enabled": False}, "report": False},  # the report's own tests turn it on
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """train/ and val/ folders with two classes of real PNG files."""
    root = tmp_path / "data"
    make_image_folder(root / "train", {"cat": 12, "dog": 12}, seed=1)
    make_image_folder(root / "val", {"cat": 5, "dog": 5}, seed=2)
    return root


@pytest.fixture
def tiny_cfg_path(tmp_path: Path, tiny_data: Path) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_config(tiny_data, tmp_path / "run"))


_FORKED = ForkedCli({**os.environ, "PYTHONUNBUFFERED": "1"})  # its server starts with the first command
_STARTUP_ENV = {k: v for k, v in os.environ.items() if k.startswith(STARTUP)}


@pytest.fixture(autouse=True)
def _startup_env_as_the_session_began():
    """run_cli forks its commands only while the variables read at start-up are as the session began. A test
    (or a library it runs in this process) that left one changed sent every later command of its process to a
    fresh interpreter, and failed the tests that need the fork (`make test-slow` in CI). Each test starts with
    them as they were; a change found is said as a warning, with the variables."""
    now = {k: v for k, v in os.environ.items() if k.startswith(STARTUP)}
    if now != _STARTUP_ENV:
        warnings.warn(f"restored the start-up variables a test had changed: {sorted(set(now.items()) ^ set(_STARTUP_ENV.items()))}", stacklevel=1)  # fmt: skip
        for key in now.keys() - _STARTUP_ENV.keys():
            del os.environ[key]
        os.environ.update(_STARTUP_ENV)
    yield


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict | None = None,
    memory: int | None = None,
    **popen,
) -> subprocess.CompletedProcess:
    """The real `trainkit` command, as a user runs it; `env` adds to (or, with None values, removes from) os.environ.

    Without Popen arguments, and with the variables read at start-up as the tests started, the command is forked
    from a process that has imported torch already (forked_cli.py: it saves about 3 s of each command's 4 on this
    machine); otherwise a fresh interpreter runs it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    if not popen and same_startup_env(env, _FORKED.env):
        return _FORKED.run(list(args), cwd or ROOT, env, timeout, memory)
    assert memory is None, "a memory bound needs the forked command"
    return subprocess.run(
        [sys.executable, "-m", "trainkit", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )


def forked_runs() -> int:
    """How many of run_cli's commands were forked (not started afresh) in this test process so far."""
    return _FORKED.runs


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one line on stderr that holds every fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> bool:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def start_visdom(
    env_path: Path, *args: str, env: dict | None = None, stdin: str | None = None
) -> tuple[subprocess.Popen, int]:
    """`trainkit visdom` on a free port, serving; the caller stops it with stop(). `stdin` answers its prompts."""
    port = free_port()
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "visdom", "--port", str(port), "--env-path", str(env_path), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin or "")
    proc.stdin.close()
    if not wait_http(f"http://127.0.0.1:{port}/"):
        proc.kill()
        pytest.fail(f"visdom server did not start: {proc.communicate()[1][-2000:]}")
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def visdom_server(tmp_path_factory):
    """trainkit's visdom server on a free loopback port, with its envs in a temporary folder."""
    proc, port = start_visdom(tmp_path_factory.mktemp("visdom-envs"))
    try:
        yield port
    finally:
        stop(proc)


FLOWERS = ROOT.parent / "shared" / "data" / "flowers-photos.tar.gz"


@pytest.fixture(scope="session")
def flowers(tmp_path_factory) -> Path:
    """The real flower photos (train/ and val/ ImageFolder trees) from ../shared/data, unpacked once."""
    import tarfile

    if not FLOWERS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FLOWERS} is missing: CI runs with ../shared beside the project")
        pytest.skip(f"{FLOWERS} is not here (a clone without ../shared)")
    dest = tmp_path_factory.mktemp("flowers")
    with tarfile.open(FLOWERS) as tar:
        tar.extractall(dest, filter="data")
    return dest / "flowers"
