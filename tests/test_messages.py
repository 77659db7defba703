"""What users read: plurals, one form for accuracies, top-k on the console, option help, --quiet, relative
paths, the visdom env of a run, and the packaging metadata."""

from __future__ import annotations

import re
import shutil
import tomllib

import pytest
from conftest import ROOT, make_image_folder, run_cli, tiny_config, write_yaml

from trainkit.run import config
from trainkit.text import plural


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    make_image_folder(root / "data" / "train", {"cat": 8, "dog": 8, "owl": 8}, seed=1)
    make_image_folder(root / "data" / "val", {"cat": 3, "dog": 3, "owl": 3}, seed=2)
    cfg = write_yaml(root / "c.yaml", tiny_config(root / "data", root / "run", num_classes=3))
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    return root, cfg, proc


def test_plural():
    assert (
        plural(1, "file") == "1 file"
        and plural(2, "file") == "2 files"
        and plural(0, "class", "classes") == "0 classes"
    )


def test_one_file_is_one_file_and_topk_shows_k_labels(tmp_path, trained):
    root, _, _ = trained
    photos = tmp_path / "photos"
    shutil.copytree(root / "data" / "val" / "cat", photos)
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.png").write_bytes(b"\x89PNG broken")
    proc = run_cli(
        "predict", "--ckpt", str(root / "run" / "best.pt"), str(photos), "--topk", "2", "--on-bad-image", "skip"
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 file is not an image and was passed over" in proc.stderr
    assert "skipped 1 file that cannot be decoded" in proc.stderr
    assert "top 2 labels (3 images)" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(photos)[:20]) or ".png" in ln]
    assert rows and all(len(re.findall(r"\d+\.\d\d%", ln)) == 2 for ln in rows), proc.stdout


def test_accuracies_are_percentages_everywhere(trained):
    _, _, proc = trained
    best = [ln for ln in proc.stdout.splitlines() if ln.startswith("best val_acc")]
    assert len(best) == 1 and re.match(r"best val_acc \d+\.\d\d% at epoch \d", best[0]), proc.stdout


def test_predict_help_names_real_config_keys():
    out = run_cli("predict", "--help").stdout
    assert "data.eval_batch_size" not in out and "data.val_batch_size" in out


def test_progress_off_keeps_the_epoch_lines_and_quiet_prints_nothing(tmp_path, trained):
    _, cfg, _ = trained
    proc = run_cli("train", "--config", str(cfg), "--run-dir", str(tmp_path / "a"), "--set", "log.progress=off")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2 | train_loss" in proc.stdout and "step 6/6" not in proc.stdout
    proc = run_cli("train", "--config", str(cfg), "--run-dir", str(tmp_path / "b"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and (tmp_path / "b" / "last.pt").is_file()


def test_a_relative_data_path_is_named_absolute(tmp_path, trained):
    _, cfg, _ = trained
    proc = run_cli("train", "--config", str(cfg), "--set", "data.train=no/such", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"no/such ({tmp_path / 'no' / 'such'}: a relative path is taken from the current folder)" in proc.stderr


def test_two_run_directories_of_one_config_plot_into_two_envs(tmp_path, trained):
    _, cfg, _ = trained
    raw = config.load_config(cfg).log.visdom
    assert raw.env is None
    a = config.load_config(cfg, ["run_dir=runs/a"])
    b = config.load_config(cfg, ["run_dir=runs/b"])
    assert (a.visdom_env, b.visdom_env) == ("a", "b")
    assert config.load_config(cfg, ["run_dir=runs/b", "log.visdom.env=mine"]).visdom_env == "mine"


def test_the_license_is_an_spdx_string_with_no_deprecation():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    import warnings

    from setuptools.config import pyprojecttoml
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyprojecttoml.apply_configuration(Distribution(), str(ROOT / "pyproject.toml"))
    assert not [w for w in caught if "license" in str(w.message).lower()], [str(w.message)[:200] for w in caught]
