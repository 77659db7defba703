"""The bad-input matrix: exit 2, one line naming the culprit, no traceback, and an existing run untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import Payload, assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml
from PIL import Image


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A finished run and everything the bad inputs are made from."""
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    make_image_folder(data / "train", {"cat": 8, "dog": 8}, seed=1)
    make_image_folder(data / "val", {"cat": 2, "dog": 2}, seed=2)
    run_dir = root / "run"
    good = tiny_config(data, run_dir, train={"epochs": 1, "log_every": 2})
    cfg = write_yaml(root / "good.yaml", good)
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "data": data, "run": run_dir, "cfg": cfg, "good": good}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
    }


def bad_yaml(world: dict, name: str, text: str) -> list[str]:
    path = world["root"] / name
    path.write_text(text)
    return ["train", "--config", str(path), "--run-dir", str(world["run"]), "--overwrite"]


def bad_data(world: dict, name: str, damage) -> list[str]:
    data = world["root"] / f"data-{name}"
    if not data.exists():
        shutil.copytree(world["data"], data)
        damage(data)
    return [
        "train",
        "--config",
        str(world["cfg"]),
        "--overwrite",
        "--set",
        f"data.train={data / 'train'}",
        "--set",
        f"data.val={data / 'val'}",
    ]


def jpeg_bytes(world: dict) -> bytes:
    src = next((world["data"] / "train" / "cat").iterdir())
    out = world["root"] / "full.jpg"
    Image.open(src).convert("RGB").save(out)
    return out.read_bytes()


def other_model_config(world: dict) -> list[str]:
    other = dict(world["good"])
    other["train"] = {**other.get("train", {}), "epochs": 3}  # more epochs: the finished run is not complete then
    other["model"] = {
        "sequential": [
            {"Conv2d": [3, 8, 3, 1, 1]},
            "ReLU",
            {"AdaptiveAvgPool2d": [1]},
            "Flatten",
            "Identity",
            {"Linear": [8, 2]},
        ]
    }
    path = write_yaml(world["root"] / "other.yaml", other)
    return ["train", "--config", str(path), "--resume", str(world["run"] / "last.pt")]


def checkpoint_file(world: dict, name: str, make) -> str:
    path = world["root"] / name
    if not path.exists():
        make(path)
    return str(path)


def truncated(world: dict):
    def make(path: Path) -> None:
        raw = (world["run"] / "last.pt").read_bytes()
        path.write_bytes(raw[: len(raw) // 3])

    return make


def evil(world: dict):
    def make(path: Path) -> None:
        torch.save({"format": "trainkit.checkpoint/1", "model": Payload(str(world["root"] / "pwned"))}, path)

    return make


def bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        p, c = chr(96 + i), chr(97 + i)
        lines.append(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]")
    return "\n".join(lines) + "\n"


CASES = {
    "malformed-yaml": (
        lambda w: bad_yaml(w, "m.yaml", "data:\n  train: [a\nmodel: {}\n"),
        ["m.yaml:3:", "YAML syntax error"],
    ),
    "unknown-key": (
        lambda w: bad_yaml(w, "u.yaml", "data: {train: a, val: b}\nmodel: {sequential: [Flatten]}\ntrian: {}\n"),
        ["u.yaml:3: trian: unknown key; did you mean 'train'?"],
    ),
    "wrong-type": (
        lambda w: bad_yaml(w, "t.yaml", "data: {train: a, val: b, batch_size: many}\nmodel: {sequential: [Flatten]}\n"),
        ["data.batch_size: expected an integer, got 'many' (str)"],
    ),
    "python-tag": (
        lambda w: bad_yaml(w, "p.yaml", "name: !!python/object/apply:os.system ['true']\n"),
        ["p.yaml:1:", "unsupported tag"],
    ),
    "deep-nesting": (lambda w: bad_yaml(w, "d.yaml", "name: " + "[" * 500 + "]" * 500 + "\n"), ["d.yaml", "nesting"]),
    "alias-bomb": (lambda w: bad_yaml(w, "b.yaml", bomb()), ["b.yaml", "alias bomb"]),
    "missing-data": (
        lambda w: ["train", "--config", str(w["cfg"]), "--overwrite", "--set", "data.train=/no/such/folder"],
        ["data.train: folder /no/such/folder does not exist"],
    ),
    "empty-class": (
        lambda w: bad_data(w, "empty", lambda d: (d / "train" / "emu").mkdir()),
        ["train/emu has no image files"],
    ),
    "corrupt-jpeg": (
        lambda w: bad_data(
            w,
            "corrupt",
            lambda d: (d / "train" / "cat" / "bad.jpg").write_bytes(jpeg_bytes(w)[:30] + bytes(range(256)) * 8),
        ),
        ["not a readable image", "cat/bad.jpg"],
    ),
    "truncated-jpeg": (
        lambda w: bad_data(w, "trunc", lambda d: (d / "train" / "cat" / "half.jpg").write_bytes(jpeg_bytes(w)[:300])),
        ["not a readable image", "cat/half.jpg", "truncated JPEG"],
    ),
    "zero-byte-jpeg": (
        lambda w: bad_data(w, "zero", lambda d: (d / "train" / "dog" / "zero.jpg").write_bytes(b"")),
        ["not a readable image", "dog/zero.jpg", "empty file"],
    ),
    "text-as-jpeg": (
        lambda w: bad_data(w, "text", lambda d: (d / "val" / "dog" / "notes.jpg").write_text("hello")),
        ["not a readable image", "dog/notes.jpg"],
    ),
    "truncated-checkpoint": (
        lambda w: ["train", "--config", str(w["cfg"]), "--resume", checkpoint_file(w, "cut.pt", truncated(w))],
        ["cut.pt: not a readable checkpoint, truncated or corrupt"],
    ),
    "other-model-checkpoint": (
        other_model_config,
        [
            "run/last.pt: its model: the checkpoint is of another model",
            "missing keys: 5.weight, 5.bias",
            "unexpected keys: 4.weight, 4.bias",
            "shape mismatches (checkpoint vs model): 0.weight (4, 3, 3, 3) vs (8, 3, 3, 3)",
        ],
    ),
    "pickled-callable": (
        lambda w: ["eval", "--ckpt", checkpoint_file(w, "evil.pt", evil(w))],
        ["evil.pt: refused", "posix.system"],
    ),
    "missing-checkpoint": (lambda w: ["eval", "--ckpt", str(w["root"] / "nope.pt")], ["nope.pt: checkpoint not found"]),
    "malformed-set": (
        lambda w: ["train", "--config", str(w["cfg"]), "--overwrite", "--set", "data.batch_size"],
        ["--set 'data.batch_size': expected KEY=VALUE"],
    ),
    # hostile and careless values (the resources issue): refused at validation, the limit named
    "duplicate-key": (
        lambda w: bad_yaml(w, "dup.yaml", "train: {epochs: 3}\ndata: {batch_size: 2}\ntrain: {epochs: 4}\n"),
        ["dup.yaml:3: key 'train' is given twice (lines 1 and 3); keep one"],
    ),
    "config-over-1mb": (
        lambda w: bad_yaml(w, "big.yaml", "name: " + "x" * 1_100_000 + "\n"),
        ["big.yaml: the config file is 1,100,007 bytes", "up to 1,000,000 bytes"],
    ),
    "huge-flow-list": (
        lambda w: bad_yaml(w, "flow.yaml", "name: [" + "1," * 200_000 + "1]\n"),
        ["flow.yaml: the document holds more than 100000 values"],
    ),
    "a-million-workers": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "data.num_workers=1000000"],
        ["data.num_workers: 1000000 worker processes is more than this machine can run (at most 4 x"],
    ),
    "threads": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "threads=100000"],
        ["threads: 100000 threads is more than this machine can run"],
    ),
    "nproc-huge": (
        lambda w: ["train", "--config", str(w["cfg"]), "--nproc", "99999999999999999999"],
        ["--nproc 99999999999999999999: this machine has"],
    ),
    "batch-size-huge": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "data.batch_size=99999999999999999999"],
        ["data.batch_size: 99999999999999999999 is beyond what any run can use (at most 2,147,483,647)"],
    ),
    "seed-huge": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "seed=99999999999999999999999"],
        ["seed: must be an integer from 0 to 2**63 - 1"],
    ),
    "seed-negative": (lambda w: ["train", "--config", str(w["cfg"]), "--set", "seed=-1"], ["seed: must be"]),
    "label-smoothing": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "train.loss.label_smoothing=5"],
        ["train.loss.label_smoothing: must be a number from 0.0 to 1.0, got 5"],
    ),
    "lambda-transform": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "data.transforms.train=[{Lambda: [str]}]"],
        ["data.transforms.train[0]: unknown transform 'Lambda'"],
    ),
    "module-layer": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "model.sequential=[Module]"],
        ["model.sequential[0]: unknown layer 'Module'"],
    ),
    "visdom-env-path": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "log.visdom.env=../../evil"],
        ["log.visdom.env: use letters, digits", "'../../evil'"],
    ),
    "visdom-port-negative": (lambda w: ["visdom", "--port", "-1"], ["visdom --port -1: a TCP port is from 1 to 65535"]),
    "visdom-port-high": (lambda w: ["visdom", "--port", "99999"], ["visdom --port 99999: a TCP port"]),
    "log-visdom-port": (
        lambda w: ["train", "--config", str(w["cfg"]), "--set", "log.visdom.port=70000"],
        ["log.visdom.port: a TCP port is from 1 to 65535, got 70000"],
    ),
    "eval-out-missing-folder": (
        lambda w: ["eval", "--ckpt", str(w["run"] / "last.pt"), "--out", "/no/such/folder/e.json"],
        ["--out /no/such/folder/e.json: folder /no/such/folder does not exist"],
    ),
    "eval-out-a-folder": (
        lambda w: ["eval", "--ckpt", str(w["run"] / "last.pt"), "--out", str(w["root"])],
        ["is a folder; give a file name"],
    ),
    "eval-out-dev-full": (
        lambda w: ["eval", "--ckpt", str(w["run"] / "last.pt"), "--out", "/dev/full"],
        ["--out /dev/full:"],
    ),
    "lr-find-out-a-file": (
        lambda w: ["lr-find", "--config", str(w["cfg"]), "--out", str(w["cfg"])],
        ["is a file; --out names a folder"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(world, case):
    make_args, fragments = CASES[case]
    args = make_args(world)
    before = snapshot(world["run"])
    proc = run_cli(*args)
    assert_user_error(proc, *fragments)
    assert snapshot(world["run"]) == before, "the existing run directory changed"
    assert not (world["root"] / "pwned").exists()  # no payload ever ran
