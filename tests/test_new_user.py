"""The paths a new user takes (issue 15): each test reproduces what a user hit, through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml

from trainkit.models import build as models
from trainkit.run import config
from trainkit.run.build import build_run

SGD_FILE = {"type": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True}


def cfg_file(tmp_path: Path, tiny_data: Path, name: str = "c.yaml", **sections) -> Path:
    return write_yaml(tmp_path / name, tiny_config(tiny_data, tmp_path / "run", **sections))


def stdout_lines(proc) -> list[str]:
    return proc.stdout.splitlines()


# --------------------------------------------------------------------------- 1. changing a class with --set X.type


def test_set_type_drops_the_file_arguments_the_new_optimizer_does_not_take(tmp_path, tiny_data):
    path = cfg_file(tmp_path, tiny_data, optim=SGD_FILE)
    proc = run_cli(
        "train", "--config", str(path), "--set", "optim.type=Adam", "--set", "optim.betas=[0.9, 0.99]", "--print-config"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "trainkit: optim: dropped momentum, nesterov: not arguments of Adam"
    resolved = config.yaml.safe_load(proc.stdout)
    assert resolved["optim"] == {
        "type": "Adam",
        "lr": 0.1,
        "decay_norm_and_bias": False,
        "groups": [],
        "betas": [0.9, 0.99],
    }


def test_set_type_keeps_and_checks_arguments_given_with_set(tmp_path, tiny_data):
    path = cfg_file(tmp_path, tiny_data, optim=SGD_FILE)
    proc = run_cli("train", "--config", str(path), "--set", "optim.type=Adam", "--set", "optim.momentum=0.9")
    assert_user_error(proc, "--set optim.momentum=0.9", "momentum")


def test_set_type_for_scheduler_and_loss(tmp_path, tiny_data):
    path = cfg_file(
        tmp_path,
        tiny_data,
        scheduler={"type": "CosineAnnealingLR", "T_max": 2, "warmup_epochs": 0},
        train={"epochs": 1, "loss": {"type": "CrossEntropyLoss", "label_smoothing": 0.1}},
    )
    proc = run_cli(
        "train", "--config", str(path), "--print-config",
        "--set", "scheduler.type=StepLR", "--set", "scheduler.step_size=1", "--set", "train.loss.type=NLLLoss",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "trainkit: scheduler: dropped T_max: not arguments of StepLR",
        "trainkit: train.loss: dropped label_smoothing: not arguments of NLLLoss",
    ]
    proc = run_cli("train", "--config", str(path), "--set", "scheduler.type=StepLR")
    assert_user_error(proc, "scheduler", "step_size")


# --------------------------------------------------------------------------- 2. a config without a whole section


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("name: x\n", ["c.yaml", "no data section", "data.train", "data.val"]),
        ("", ["c.yaml", "is empty", "data", "model"]),
        ("# only a comment\n", ["c.yaml", "is empty", "data", "model"]),
        ("data: {train: T, val: V}\n", ["c.yaml", "no model section", "sequential", "torchvision"]),
    ],
)
@pytest.mark.parametrize("command", ["train", "inspect-shapes"])
def test_a_missing_section_is_one_line(tmp_path, text, fragments, command):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert_user_error(run_cli(command, "--config", str(path)), *fragments)


# --------------------------------------------------------------------------- 3. bad files found at start


def bad_files(folder: Path) -> dict[str, Path]:
    good_jpg = folder / "good.jpg"
    make_image_folder(folder.parent / "_tmp", {"x": 1}, ext="jpg")
    shutil.copy(folder.parent / "_tmp" / "x" / "000.jpg", good_jpg)
    shutil.rmtree(folder.parent / "_tmp")
    raw = good_jpg.read_bytes()
    png = next(folder.glob("*.png")).read_bytes()
    files = {
        "text.jpg": b"this is not an image\n",
        "zero.png": b"",
        "cut.jpg": raw[: len(raw) // 2],
        "cut.png": png[: len(png) // 2],
    }
    good_jpg.unlink()
    out = {}
    for name, content in files.items():
        (folder / name).write_bytes(content)
        out[name] = folder / name
    return out


def test_a_bad_val_file_is_found_before_the_first_step_and_the_rerun_is_not_blocked(tmp_path, tiny_data):
    (tiny_data / "val" / "cat" / "x.jpg").write_text("not a picture")
    path = cfg_file(tmp_path, tiny_data)
    proc = run_cli("train", "--config", str(path))
    assert_user_error(proc, "data.val", "x.jpg", "on_bad_image: skip")
    assert "epoch 1/" not in proc.stdout  # no training step ran
    assert not (tmp_path / "run").exists()  # the run dir is as it was: absent
    (tiny_data / "val" / "cat" / "x.jpg").unlink()
    proc = run_cli("train", "--config", str(path))  # the same command, no --overwrite
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["text.jpg", "zero.png", "cut.jpg", "cut.png"])
def test_each_kind_of_bad_file_is_found_at_start(tmp_path, tiny_data, name):
    for other, p in bad_files(tiny_data / "train" / "dog").items():
        if other != name:
            p.unlink()
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)))
    assert_user_error(proc, "data.train", name)
    assert "epoch 1/" not in proc.stdout


def test_skip_names_the_bad_files_once_at_start(tmp_path, tiny_data):
    bad_files(tiny_data / "train" / "dog")
    path = cfg_file(tmp_path, tiny_data, data={"on_bad_image": "skip"})
    proc = run_cli("train", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in stdout_lines(proc) if "not readable images" in ln]
    assert len(notes) == 1, proc.stdout
    for name in ("text.jpg", "zero.png", "cut.jpg", "cut.png"):
        assert name in notes[0]
    assert "data.train: skipping 4 files" in notes[0]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("bad_images" not in r for r in records)  # none left to skip while training


def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_run_dir_as_it_found_it(tmp_path, tiny_data):
    path = cfg_file(tmp_path, tiny_data, optim={"type": "SGD", "lr": 1e30})  # diverges in epoch 1
    proc = run_cli("train", "--config", str(path))
    assert proc.returncode == 1 and "loss became" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # an empty folder given by the user stays, empty
    assert run_cli("train", "--config", str(path)).returncode == 1
    assert (tmp_path / "run").is_dir() and not any((tmp_path / "run").iterdir())


# --------------------------------------------------------------------------- 4. resuming an earlier checkpoint


def test_resuming_an_earlier_checkpoint_cuts_metrics_back_to_it(tmp_path, tiny_data):
    path = cfg_file(tmp_path, tiny_data, train={"epochs": 1, "log_every": 2})
    assert run_cli("train", "--config", str(path)).returncode == 0
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "epoch1.pt")
    assert run_cli("train", "--config", str(path), "--resume", "--set", "train.epochs=2").returncode == 0
    # a checkpoint outside the run continues where it lies, unless --run-dir names the run
    proc = run_cli(
        "train", "--resume", str(tmp_path / "epoch1.pt"), "--set", "train.epochs=3", "--run-dir", str(tmp_path / "run")
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


# --------------------------------------------------------------------------- 5. an image smaller than a kernel


def test_an_image_shrunk_below_a_kernel_is_diagnosed(tmp_path, tiny_data):
    block = [{"Conv2d": [16, 16, 3, 1, 1]}, {"MaxPool2d": [2]}]
    layers = [{"Conv2d": [3, 16, 3, 1, 1]}, {"MaxPool2d": [2]}, *block, *block, {"Conv2d": [16, 16, 3]}]
    path = cfg_file(tmp_path, tiny_data, model={"sequential": layers})
    proc = run_cli("inspect-shapes", "--config", str(path), "--input-size", "3", "8", "8")
    assert proc.returncode == 1
    fix = next(ln for ln in stdout_lines(proc) if ln.strip().startswith("fix:"))
    assert "1x1" in fix and "3x3 kernel" in fix and "3 poolings" in fix, fix
    assert "remove a pooling" in fix and "set in_channels" not in fix, fix


@pytest.mark.parametrize("size", [["3", "0", "224"], ["3", "-4", "8"]])
def test_non_positive_input_sizes_are_argument_errors(tmp_path, tiny_data, size):
    proc = run_cli("inspect-shapes", "--config", str(cfg_file(tmp_path, tiny_data)), "--input-size", *size)
    assert_user_error(proc, "--input-size", "positive")


# --------------------------------------------------------------------------- 6. grayscale images


def gray_data(tmp_path: Path) -> Path:
    root = tmp_path / "gray"
    make_image_folder(root / "train", {"a": 8, "b": 8}, mode="L")
    make_image_folder(root / "val", {"a": 4, "b": 4}, mode="L")
    return root


def one_channel_model() -> dict:
    return {"sequential": [{"Conv2d": [1, 4, 3, 1, 1]}, {"AdaptiveAvgPool2d": [1]}, "Flatten", {"Linear": [4, 2]}]}


def test_grayscale_images_and_a_one_channel_model_say_both_fixes(tmp_path):
    path = write_yaml(
        tmp_path / "g.yaml", tiny_config(gray_data(tmp_path), tmp_path / "run", model=one_channel_model())
    )
    proc = run_cli("train", "--config", str(path))
    assert_user_error(proc, "converted to RGB", "Grayscale", "data.transforms.train and data.transforms.val")


def test_grayscale_in_train_only_names_both_sample_shapes(tmp_path):
    gray = ["Grayscale", "ToTensor"]
    cfg = tiny_config(gray_data(tmp_path), tmp_path / "run", model=one_channel_model())
    cfg["data"]["transforms"] = {"train": gray}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "g.yaml", cfg)))
    assert_user_error(proc, "[1, 16, 16]", "[3, 16, 16]", "data.transforms.train", "data.transforms.val")
    cfg["data"]["transforms"] = {"train": gray, "val": gray}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "g.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- 7. frozen BatchNorm keeps its statistics


def test_frozen_batchnorm_keeps_its_running_statistics(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train", {"a": 8, "b": 8}, size=32)
    make_image_folder(root / "val", {"a": 2, "b": 2}, size=32)
    frozen = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    model = {"torchvision": "resnet18", "args": {"num_classes": 2}, "freeze": frozen}
    raw = tiny_config(root, tmp_path / "run", train={"epochs": 1, "log_every": 2})
    raw["model"] = model
    cfg = config.from_dict(raw)
    start = models.build_model(cfg.model, seed=cfg.seed).state_dict()
    assert run_cli("train", "--config", str(write_yaml(tmp_path / "r.yaml", config.to_dict(cfg)))).returncode == 0
    after = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    for key in ("bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_mean", "bn1.weight", "conv1.weight"):
        assert torch.equal(after[key], start[key]), key
    assert not torch.equal(after["fc.weight"], start["fc.weight"])


# --------------------------------------------------------------------------- 8. transfer to another number of classes


def test_weights_of_another_head_size_load_all_but_the_head(tmp_path, tiny_data):
    assert run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data))).returncode == 0
    three = tmp_path / "three"
    make_image_folder(three / "train", {"a": 8, "b": 8, "c": 8})
    make_image_folder(three / "val", {"a": 2, "b": 2, "c": 2})
    cfg = tiny_config(three, tmp_path / "run3", num_classes=3)
    cfg["model"]["weights"] = str(tmp_path / "run" / "best.pt")
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "t.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    assert "model.weights: 4.weight, 4.bias not loaded (the head has 3 classes, the checkpoint 2)" in proc.stdout
    first = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]["0.weight"]
    start = build_run(config.from_dict({**cfg, "run_dir": str(tmp_path / "x")})).model.state_dict()["0.weight"]
    assert torch.equal(first, start)  # every other tensor loaded
    cfg["model"]["sequential"][0] = {"Conv2d": [3, 5, 3, 1, 1]}  # a mismatch outside the head stays an error
    cfg["model"]["sequential"][-1] = {"Linear": [5, 3]}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "t.yaml", cfg)))
    assert_user_error(proc, "0.weight")


# --------------------------------------------------------------------------- 9. messages that blame the right thing


def test_an_unknown_optimizer_argument_is_blamed_on_its_set(tmp_path, tiny_data):
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "optim.lrr=0.1")
    assert_user_error(proc, "--set optim.lrr=0.1", "lrr", "did you mean 'lr'")


def test_an_unknown_top_level_key_from_set_lists_the_valid_ones(tmp_path, tiny_data):
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "foo.bar=1")
    assert_user_error(proc, "--set foo.bar=1", "foo: unknown key", "data", "model", "optim", "train")


def test_a_wrongly_typed_argument_names_its_key_and_type(tmp_path, tiny_data):
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "optim.momentum=0.9x")
    assert_user_error(proc, "--set optim.momentum=0.9x", "optim.momentum", "a number")
    assert "not supported between" not in proc.stderr


def trained(tmp_path: Path, tiny_data: Path) -> Path:
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "run" / "best.pt"


def test_eval_blames_set_not_the_checkpoint_and_hints_at_data_when_moved(tmp_path, tiny_data):
    ckpt = trained(tmp_path, tiny_data)
    proc = run_cli("eval", "--ckpt", str(ckpt), "--set", "foo=1")
    assert_user_error(proc, "--set foo=1", "foo: unknown key")
    assert "stored config" not in proc.stderr
    tiny_data.rename(tmp_path / "moved")
    proc = run_cli("eval", "--ckpt", str(ckpt))
    assert_user_error(proc, "does not exist", "--data DIR")


@pytest.mark.parametrize(
    "name,content", [("c.yaml", b"name: x\n"), ("p.jpg", None), ("notes.txt", b"hello\n")], ids=["yaml", "jpeg", "text"]
)
def test_eval_on_a_file_that_is_not_a_checkpoint(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        make_image_folder(tmp_path / "imgs", {"x": 1}, ext="jpg")
        content = (tmp_path / "imgs" / "x" / "000.jpg").read_bytes()
    path.write_bytes(content)
    proc = run_cli("eval", "--ckpt", str(path))
    assert_user_error(proc, name, "not a PyTorch checkpoint")
    assert "pickled" not in proc.stderr


def test_an_empty_class_folder_says_both_folders_must_hold_the_same_classes(tmp_path, tiny_data):
    (tiny_data / "val" / "emu").mkdir()
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)))
    assert_user_error(proc, "emu", "same classes", "data.train", "data.val")


# --------------------------------------------------------------------------- 10. files that are not images


def test_files_that_are_not_images_are_counted_and_named(tmp_path, tiny_data):
    (tiny_data / "train" / "cat" / "imageNotFound.gif").write_bytes(b"GIF89a")
    (tiny_data / "train" / ".DS_Store").write_bytes(b"x")  # hidden: not a user's file
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    line = "data.train: ignored 1 file that is not an image: " + str(tiny_data / "train" / "cat" / "imageNotFound.gif")
    assert line in stdout_lines(proc)


# --------------------------------------------------------------------------- 11. extending a run past its schedule


def test_a_schedule_shorter_than_the_run_is_said_at_start(tmp_path, tiny_data):
    path = cfg_file(tmp_path, tiny_data, scheduler={"type": "CosineAnnealingLR", "T_max": 2})
    proc = run_cli("train", "--config", str(path))
    assert proc.returncode == 0 and "horizon" not in proc.stdout
    proc = run_cli("train", "--config", str(path), "--resume", "--set", "train.epochs=4")
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in stdout_lines(proc) if "horizon" in ln]
    assert warning == [
        "warning: scheduler: CosineAnnealingLR's horizon (T_max 2 epochs) is shorter than train.epochs (4): "
        "the learning rate reaches its minimum at epoch 2 and rises again; set scheduler.T_max to 4"
    ]


# --------------------------------------------------------------------------- 12. a smoke run


@pytest.mark.slow
def test_fast_dev_run_runs_every_part_and_writes_nothing(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cfg = tiny_config(tiny_data, "runs/tiny", scheduler={"type": "StepLR", "step_size": 1})
    path = write_yaml(tmp_path / "c.yaml", cfg)
    proc = run_cli("train", "--config", str(path), "--fast-dev-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "runs").exists() and not any((tmp_path / "tmp").iterdir())
    out = proc.stdout
    assert "fast-dev-run: 2 training and 2 validation batches" in out
    assert "checkpoint saved and loaded back" in out
    assert "*best*" not in out and "best val_acc" not in out  # a smoke run's two batches make no best
    assert str(tmp_path / "tmp") not in out + proc.stderr  # no path that is gone when it ends
    assert "a temporary run_dir, removed after" in out
    proc = run_cli("train", "--config", str(path), "--fast-dev-run", "3", "--run-dir", "kept", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fast-dev-run: 3 training and 3 validation batches" in proc.stdout  # 10 val images: 3 batches of 4
    assert (tmp_path / "kept" / "last.pt").is_file()


@pytest.mark.slow
def test_fast_dev_run_finds_a_broken_part(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cfg = tiny_config(tiny_data, "runs/tiny", train={"loss": {"type": "MSELoss"}})  # MSELoss on class indices
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), "--fast-dev-run", cwd=tmp_path)
    # the loss fails in the first step: a bug's exit 1, not an argument error
    assert proc.returncode == 1 and "mse_loss" in proc.stderr
    assert not (tmp_path / "runs").exists() and not any((tmp_path / "tmp").iterdir())
    proc = run_cli("train", "--config", str(tmp_path / "c.yaml"), "--fast-dev-run", "--set", "seed=x", cwd=tmp_path)
    assert_user_error(proc, "seed")
    assert not any((tmp_path / "tmp").iterdir())  # a bad config leaves no temporary folder either


# --------------------------------------------------------------------------- 13. 14. summary and threads


def test_the_model_summary_line_at_start(tmp_path, tiny_data):
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data)), "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    # Conv2d 3->4 (3x3): 112, Linear 4->2: 10; float32
    assert "model: 122 parameters (122 trainable, 0.00 MB), input [3, 16, 16]" in stdout_lines(proc)


def test_threads(tmp_path, tiny_data):
    before = torch.get_num_threads()
    try:
        build_run(config.from_dict(tiny_config(tiny_data, tmp_path / "run", threads=1)))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert config.from_dict(tiny_config(tiny_data, tmp_path / "run")).threads == "auto"
    proc = run_cli("train", "--config", str(cfg_file(tmp_path, tiny_data, threads=0)))
    assert_user_error(proc, "threads", "positive")


def test_fast_dev_runs_val_batches_are_a_seeded_sample_across_classes(tmp_path):
    from conftest import make_image_folder

    from trainkit.run import config
    from trainkit.run.build import build_run

    root = tmp_path / "data"
    make_image_folder(root / "train", {"cat": 4, "dog": 4})
    make_image_folder(root / "val", {"cat": 12, "dog": 12})  # in order, the first 2 batches of 4 are all cats
    cfg = config.from_dict(tiny_config(root, tmp_path / "run"))
    targets = [[t for _, t in build_run(cfg, limit_batches=2).data.val_set.samples] for _ in range(2)]
    assert len(targets[0]) == 8 and set(targets[0]) == {0, 1}
    assert targets[0] == targets[1]  # seeded: the same sample each time


def test_photos_of_many_sizes_with_default_transforms_are_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, cls in enumerate(("cats", "dogs")):
            (tmp_path / split / cls).mkdir(parents=True)
            for j in range(4):
                h, w = 40 + 7 * j + c, 36 + 5 * j
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{j}.png"
                )
    cfg = {"data": {"train": str(tmp_path / "train"), "val": str(tmp_path / "val"), "num_workers": 0},
           "model": {"torchvision": "resnet18"}, "device": "cpu", "run_dir": str(tmp_path / "run"),
           "log": {"visdom": {"enabled": False}}}  # fmt: skip
    path = write_yaml(tmp_path / "photos.yaml", cfg)
    proc = run_cli("train", "--config", str(path))
    assert_user_error(
        proc, "data.transforms.train: the images come out of the transforms in different sizes", "RandomResizedCrop"
    )
    proc = run_cli(
        "train", "--config", str(path), "--set", "data.transforms.train=[{RandomResizedCrop: {size: 32}}, ToTensor]"
    )
    assert_user_error(proc, "data.transforms.val: the images come out", "Resize", "CenterCrop", "data.cache_size")
    assert not (tmp_path / "run").exists()
