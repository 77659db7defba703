"""Data the way users have it: one folder split in two (`data.val_split`), a label file (`data.dataset: csv`),
and data that holds only some of the classes (`eval --data`), each run from the CLI on real image files."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from conftest import ROOT, assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml

from trainkit.data.split import plan_split, unit
from trainkit.store import checkpoint
from trainkit.text import width


def one_folder(root, counts=None) -> None:
    make_image_folder(root / "all", counts or {"cat": 20, "dog": 12}, seed=1)


def split_config(root, run_dir, **data) -> dict:
    cfg = tiny_config(root, run_dir, data={"train": str(root / "all"), "val_split": 0.25, **data}, train={"epochs": 1})
    del cfg["data"]["val"]
    return cfg


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- data.val_split


def test_a_split_is_said_recorded_and_stratified(tmp_path):
    one_folder(tmp_path)
    cfg = split_config(tmp_path, tmp_path / "run", cache="memory", cache_size=12, sampler="weighted")
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    n_val = split["val_count"]
    assert f"val: 25.00% of train split off (stratified, split_seed 0): {32 - n_val} train / {n_val} val" in proc.stdout
    assert len(split["val"]) == n_val and {v.split(os.sep)[0] for v in split["val"]} == {"cat", "dog"}
    assert all((tmp_path / "all" / v).is_file() for v in split["val"])
    evaluated = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "e.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "e.json").read_text())["samples"] == n_val
    predicted = run_cli("predict", "--ckpt", str(tmp_path / "run" / "last.pt"), str(tmp_path / "all"))
    assert predicted.returncode == 0, predicted.stderr
    assert f"accuracy on the {n_val} labelled images" in predicted.stdout  # its val files alone
    assert f"(the accuracy leaves out {32 - n_val} images the run trained on: its split.json)" in predicted.stdout


def test_the_training_seed_moves_no_image_and_added_images_move_none_already_assigned(tmp_path):
    one_folder(tmp_path)
    vals = []
    for seed in (0, 7):
        cfg = split_config(tmp_path, tmp_path / f"s{seed}")
        cfg["seed"] = seed
        assert run_cli("train", "--config", str(write_yaml(tmp_path / f"{seed}.yaml", cfg))).returncode == 0
        vals.append(json.loads((tmp_path / f"s{seed}" / "split.json").read_text())["val"])
    assert vals[0] == vals[1]
    # 200 files of 4 classes, then 50 more: every file first assigned keeps its side (each side depends on its
    # own path's hash), and each class gives about the fraction
    files = [f"/d/{c}/{i}.png" for c in "abcd" for i in range(50)]
    targets = [i // 50 for i in range(200)]
    before = plan_split(files, targets, "/d", 0.2, 0, "data.train")
    more = files + [f"/d/{c}/new{i}.png" for c in "abcd" for i in range(12)]
    after = plan_split(more, targets + [i // 12 for i in range(48)], "/d", 0.2, 0, "data.train")
    assert {files[i] for i in before.val} == {more[i] for i in after.val if i < 200}
    assert all(4 <= sum(1 for i in before.val if targets[i] == c) <= 17 for c in range(4))
    assert plan_split(files, targets, "/d", 0.2, 1, "data.train").val != before.val  # split_seed does move them
    assert 0 <= unit(0, "a/b.png") < 1


def test_eval_and_resume_take_the_recorded_list_not_a_new_one(tmp_path):
    one_folder(tmp_path)
    path = write_yaml(tmp_path / "c.yaml", split_config(tmp_path, tmp_path / "run"))
    assert run_cli("train", "--config", str(path)).returncode == 0
    split_file = tmp_path / "run" / "split.json"
    split = json.loads(split_file.read_text())
    split["val"] = split["val"][:3]  # a list no hash gives: only a recorded list can be followed
    split_file.write_text(json.dumps(split))
    out = tmp_path / "e.json"
    assert run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--out", str(out)).returncode == 0
    assert json.loads(out.read_text())["samples"] == 3
    resumed = run_cli("train", "--config", str(path), "--set", "train.epochs=2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "split off (from " in resumed.stdout and f"{32 - 3} train / 3 val" in resumed.stdout


def test_fast_dev_run_and_its_keys_checked(tmp_path):
    one_folder(tmp_path)
    fast = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", split_config(tmp_path, tmp_path / "run"))), "--fast-dev-run")  # fmt: skip
    assert fast.returncode == 0, fast.stderr
    for value, why in ((1.5, "a fraction between 0 and 1"), (0, "a fraction between 0 and 1")):
        cfg = split_config(tmp_path, tmp_path / "bad", val_split=value)
        assert_user_error(run_cli("train", "--config", str(write_yaml(tmp_path / "b.yaml", cfg))), why)
    both = split_config(tmp_path, tmp_path / "bad")
    both["data"]["val"] = str(tmp_path / "all")
    assert_user_error(run_cli("train", "--config", str(write_yaml(tmp_path / "b.yaml", both))), "give data.val or data.val_split, not both")  # fmt: skip
    neither = split_config(tmp_path, tmp_path / "bad")
    del neither["data"]["val_split"]
    assert_user_error(run_cli("train", "--config", str(write_yaml(tmp_path / "b.yaml", neither))), "or data.val_split: 0.2 to split data.train")  # fmt: skip


# ---- data.dataset: csv


def flat_csv(tree, folder, out, delimiter=",", header=("path", "label")) -> list[list[str]]:
    """An ImageFolder tree written out as one flat folder and a label file, rows in ImageFolder's order."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in sorted(p.name for p in tree.iterdir() if p.is_dir()):
        for f in sorted((tree / c).iterdir()):
            os.link(f, folder / f"{tree.name}_{c}_{f.name}")
            rows.append([f"{folder.name}/{tree.name}_{c}_{f.name}", c])
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return rows


def csv_config(tmp_path, run_dir, **data) -> dict:
    cfg = tiny_config(tmp_path, run_dir, train={"epochs": 1})
    cfg["data"].update(
        {"dataset": "csv", "train": str(tmp_path / "train.csv"), "val": str(tmp_path / "val.csv"), **data}
    )
    return cfg


def test_a_label_file_trains_as_its_folder_does(tmp_path, tiny_data):
    flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "val.csv", delimiter="\t", header=None)
    folder = run_cli("train", "--config", str(write_yaml(tmp_path / "f.yaml", tiny_config(tiny_data, tmp_path / "folder", train={"epochs": 1}))))  # fmt: skip
    table = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", csv_config(tmp_path, tmp_path / "csv"))))
    assert folder.returncode == 0 and table.returncode == 0, table.stderr
    assert records(tmp_path / "folder")[-1]["val_acc"] == records(tmp_path / "csv")[-1]["val_acc"]
    assert records(tmp_path / "folder")[-1]["train_loss"] == records(tmp_path / "csv")[-1]["train_loss"]
    for command in (["eval", "--ckpt", str(tmp_path / "csv" / "last.pt")], ["report", str(tmp_path / "csv")]):
        proc = run_cli(*command)
        assert proc.returncode == 0, (command, proc.stderr)
    # eval --data takes a label file for a run on folders, and a folder for a run on label files
    for run, given in (("folder", tmp_path / "val.csv"), ("csv", tiny_data / "val")):
        out = tmp_path / f"{run}.json"
        proc = run_cli("eval", "--ckpt", str(tmp_path / run / "last.pt"), "--data", str(given), "--out", str(out))
        assert proc.returncode == 0, (run, proc.stderr)
        assert json.loads(out.read_text())["val_acc"] == records(tmp_path / "folder")[-1]["val_acc"]


def test_bad_rows_are_named_by_file_and_line_or_skipped(tmp_path, tiny_data):
    rows = flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "val.csv")
    good = (tmp_path / "train.csv").read_text()
    cases = {
        "images/gone.png,cat\n": "train.csv:26: images/gone.png: no such file under",
        f"{rows[0][0]},dog\n": f"train.csv:26: {rows[0][0]}: a duplicate of line 2",
        f"{rows[1][0]},\n": f"train.csv:26: {rows[1][0]}: an empty label",
        "c.yaml,cat\n": "train.csv:26: c.yaml: not an image",
    }
    (tmp_path / "c.yaml").write_text("x: 1\n")
    for extra, message in cases.items():
        (tmp_path / "train.csv").write_text(good + extra)
        proc = run_cli("train", "--config", str(write_yaml(tmp_path / "r.yaml", csv_config(tmp_path, tmp_path / "r"))))
        assert_user_error(proc, message)
        assert not (tmp_path / "r").exists()
    (tmp_path / "train.csv").write_text(good)
    (tmp_path / "val.csv").write_text((tmp_path / "val.csv").read_text() + f"{rows[2][0]},zebra\n")
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "z.yaml", csv_config(tmp_path, tmp_path / "z"))))
    assert_user_error(proc, "val.csv:12: label 'zebra' is not a class of data.train")
    skip = run_cli("train", "--config", str(write_yaml(tmp_path / "s.yaml", csv_config(tmp_path, tmp_path / "s", on_bad_image="skip"))))  # fmt: skip
    assert skip.returncode == 0, skip.stderr
    assert "data.val: skipped 1 bad row: val.csv:12: label 'zebra'" in skip.stdout


def test_columns_by_name_a_split_column_and_an_explicit_class_order(tmp_path, tiny_data):
    rows = flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "unused.csv")
    rows += flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "unused2.csv")
    with open(tmp_path / "all.csv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["kind", "file", "split"])
        w.writerows([[label, path, "train" if i < 24 else "val"] for i, (path, label) in enumerate(rows)])
    cfg = csv_config(tmp_path, tmp_path / "run", train=str(tmp_path / "all.csv"), val=None, path_column="file", label_column="kind", split_column="split", classes=["dog", "cat"])  # fmt: skip
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    assert "24 train / 10 val images" in proc.stdout.replace("train /", "train /")
    assert checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")["classes"] == ["dog", "cat"]
    wrong = csv_config(tmp_path, tmp_path / "w", train=str(tmp_path / "all.csv"), val=None, path_column="fil", split_column="split")  # fmt: skip
    assert_user_error(run_cli("train", "--config", str(write_yaml(tmp_path / "w.yaml", wrong))), "all.csv has no column 'fil'; did you mean 'file'")  # fmt: skip


def test_a_label_file_with_a_val_split(tmp_path, tiny_data):
    flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    cfg = csv_config(tmp_path, tmp_path / "run", val=None, val_split=0.25)
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "split.json").is_file() and "split off" in proc.stdout


@pytest.mark.slow
def test_the_flower_photos_as_a_label_file_train_as_the_folders_do(tmp_path, flowers):
    flat_csv(flowers / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(flowers / "val", tmp_path / "images", tmp_path / "val.csv")
    data = {"cache": "memory", "cache_size": 40, "batch_size": 64, "transforms": {"train": [{"RandomResizedCrop": {"size": 32}}, "ToTensor"], "val": [{"Resize": 36}, {"CenterCrop": 32}, "ToTensor"]}}  # fmt: skip
    folder = tiny_config(flowers, tmp_path / "folder", num_classes=5, data=data, train={"epochs": 1})
    folder["model"]["sequential"][-1] = {"Linear": [4, 5]}
    table = {**folder, "run_dir": str(tmp_path / "csv"), "data": {**folder["data"], "dataset": "csv", "train": str(tmp_path / "train.csv"), "val": str(tmp_path / "val.csv")}}  # fmt: skip
    for name, cfg in (("folder", folder), ("csv", table)):
        proc = run_cli("train", "--config", str(write_yaml(tmp_path / f"{name}.yaml", cfg)))
        assert proc.returncode == 0, proc.stderr
    assert records(tmp_path / "folder")[-1]["val_acc"] == records(tmp_path / "csv")[-1]["val_acc"]


# ---- classes by name, and names people use


def test_eval_of_data_with_some_of_the_classes_maps_them_by_name(tmp_path):
    classes = {"with space": 10, "日本": 10, "zebra": 10}
    make_image_folder(tmp_path / "data" / "train", classes, seed=1)
    make_image_folder(tmp_path / "data" / "val", classes, seed=2)
    cfg = tiny_config(tmp_path / "data", tmp_path / "run", num_classes=3, train={"epochs": 1})
    assert run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))).returncode == 0
    some = tmp_path / "some"
    shutil.copytree(tmp_path / "data" / "val" / "日本", some / "日本")
    out = tmp_path / "e.json"
    proc = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--data", str(some), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["samples"] == 10 and list(result["per_class"]) == ["日本"]
    row = result["classes"].index("日本")
    assert len(result["confusion"]) == 3 and sum(result["confusion"][row]) == 10  # every class a column, 日本's row
    full = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"))
    header = next(ln for ln in full.stdout.splitlines() if ln.strip().startswith("with space"))
    table = full.stdout.split("confusion matrix (rows: true class, columns: predicted)\n")[1].split("\n\n")[0]
    assert "with space" in table.splitlines()[0]  # the whole name, not "with"
    assert len({width(line) for line in table.splitlines()}) == 1, table  # 日本 takes two columns per character
    assert header
    (some / "lion").mkdir()
    shutil.copy(next((some / "日本").iterdir()), some / "lion" / "a.png")
    bad = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--data", str(some))
    assert_user_error(bad, "1 class not among the training classes: lion")


# ---- data.test


def test_a_test_set_is_evaluated_once_at_the_end_with_best_pt(tmp_path, tiny_data):
    # the val photos with their labels swapped: whatever best.pt gets right on val, it gets wrong on test
    for name, other in (("cat", "dog"), ("dog", "cat")):
        shutil.copytree(tiny_data / "val" / name, tmp_path / "test" / other)
    cfg = tiny_config(tiny_data, tmp_path / "run", data={"test": str(tmp_path / "test")}, train={"epochs": 2})
    cfg["log"]["report"] = True
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    test = json.loads((tmp_path / "run" / "test.json").read_text())
    best = checkpoint.load_checkpoint(tmp_path / "run" / "best.pt")
    assert test["checkpoint"].endswith("best.pt") and test["epoch"] == best["epoch"] and test["samples"] == 10
    assert test["test_acc"] == pytest.approx(1 - best["metrics"]["val_acc"])
    line = f"test_acc {100 * test['test_acc']:.2f}% (best.pt, epoch {best['epoch']}, 10 images)"
    assert line in proc.stdout
    assert all("test_acc" not in r and "test_loss" not in r for r in records(tmp_path / "run"))  # never in training
    assert line in (tmp_path / "run" / "report.html").read_text()


def test_a_split_column_can_mark_test_rows(tmp_path, tiny_data):
    rows = flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "a.csv")
    rows += flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "b.csv")
    with open(tmp_path / "all.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows(
            [[p, label, "train" if i < 20 else "val" if i < 28 else "test"] for i, (p, label) in enumerate(rows)]
        )
    cfg = csv_config(tmp_path, tmp_path / "run", train=str(tmp_path / "all.csv"), val=None, split_column="split")
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    assert "20 train / 8 val images" in proc.stdout and "6 images)" in proc.stdout
    assert json.loads((tmp_path / "run" / "test.json").read_text())["samples"] == 6


@pytest.mark.slow
def test_a_split_under_ddp_is_the_one_process_split(tmp_path):
    one_folder(tmp_path)
    for name, nproc in (("two", ["--nproc", "2"]), ("one", [])):
        cfg = split_config(tmp_path, tmp_path / name, cache="memory")
        proc = run_cli("train", "--config", str(write_yaml(tmp_path / f"{name}.yaml", cfg)), *nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = (json.loads((tmp_path / n / "split.json").read_text()) for n in ("two", "one"))
    assert two["val"] == one["val"]
    assert records(tmp_path / "two")[-1]["epoch"] == 1


def test_the_sampler_predict_features_and_lr_find_on_a_label_file(tmp_path, tiny_data):
    flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "val.csv")
    cfg = write_yaml(tmp_path / "c.yaml", csv_config(tmp_path, tmp_path / "run", sampler="weighted"))
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "expected class mix (weighted sampler): cat 50.0%, dog 50.0%" in proc.stdout  # class weights by label
    ckpt = str(tmp_path / "run" / "last.pt")
    predicted = run_cli("predict", "--ckpt", ckpt, str(tmp_path / "val.csv"))
    assert predicted.returncode == 0, predicted.stderr
    assert run_cli("eval", "--ckpt", ckpt, "--out", str(tmp_path / "e.json")).returncode == 0
    acc = json.loads((tmp_path / "e.json").read_text())["val_acc"]
    assert f"accuracy on the 10 labelled images: {100 * acc:.2f}%" in predicted.stdout  # the CSV's labels
    feats = run_cli("features", "--ckpt", ckpt, "--data", str(tmp_path / "val.csv"), "--layer", "2", "--out", str(tmp_path / "f.npz"))  # fmt: skip
    assert feats.returncode == 0, feats.stderr
    assert sorted(np.load(tmp_path / "f.npz")["labels"].tolist()) == [0] * 5 + [1] * 5
    found = run_cli(
        "lr-find",
        "--config",
        str(cfg),
        "--steps",
        "30",
        "--start",
        "1e-5",
        "--end",
        "10",
        "--out",
        str(tmp_path / "lr"),
    )
    assert found.returncode == 0, found.stderr
    (tmp_path / "odd.csv").write_text((tmp_path / "val.csv").read_text() + "images/train_cat_000.png,zebra\n")
    odd = run_cli("predict", "--ckpt", ckpt, str(tmp_path / "odd.csv"))
    assert_user_error(odd, "odd.csv:12: label 'zebra' is not a class of the checkpoint")


@pytest.mark.slow
def test_a_label_file_under_ddp(tmp_path, tiny_data):
    flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "val.csv")
    cfg = write_yaml(tmp_path / "c.yaml", csv_config(tmp_path, tmp_path / "run"))
    proc = run_cli("train", "--config", str(cfg), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert records(tmp_path / "run")[-1]["epoch"] == 1


CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.slow
def test_the_cifar_jpegs_split_from_a_label_file_train_as_from_their_folder(tmp_path):
    """The 10,000 CIFAR-10 test JPEGs as one folder split by data.val_split, and as a label file (rows in the
    folder's order, paths from the same root): the same split, the same training, the same accuracy."""
    import tarfile

    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} is not here (a clone without ../shared)")
    with tarfile.open(CIFAR) as tar:
        tar.extractall(tmp_path, members=[m for m in tar.getmembers() if m.name.split("/")[0] in ("test", ".")], filter="data")  # fmt: skip
    folder = tmp_path / "test"
    rows = [f"{p.relative_to(folder)},{p.parent.name}" for p in sorted(folder.glob("*/*.jpg"))]
    (tmp_path / "cifar.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    data = {"train": str(folder), "val_split": 0.2, "cache": "memory", "batch_size": 256}
    cfg = tiny_config(tmp_path, tmp_path / "folder", num_classes=10, data=data, train={"epochs": 1})
    del cfg["data"]["val"]
    table = {**cfg, "run_dir": str(tmp_path / "csv"), "data": {**cfg["data"], "dataset": "csv", "train": str(tmp_path / "cifar.csv"), "root": str(folder)}}  # fmt: skip
    for name, c in (("folder", cfg), ("csv", table)):
        proc = run_cli("train", "--config", str(write_yaml(tmp_path / f"{name}.yaml", c)))
        assert proc.returncode == 0, proc.stderr
    a, b = records(tmp_path / "folder")[-1], records(tmp_path / "csv")[-1]
    assert (a["val_acc"], a["train_loss"]) == (b["val_acc"], b["train_loss"]) and a["val_acc"] > 0.15
    split = json.loads((tmp_path / "folder" / "split.json").read_text())
    assert split["val"] == json.loads((tmp_path / "csv" / "split.json").read_text())["val"]
    assert 1800 <= split["val_count"] <= 2200


def test_a_test_label_file_and_a_report_of_some_of_the_classes(tmp_path, tiny_data):
    flat_csv(tiny_data / "train", tmp_path / "images", tmp_path / "train.csv")
    flat_csv(tiny_data / "val", tmp_path / "images", tmp_path / "val.csv")
    lines = (tmp_path / "val.csv").read_text().splitlines()
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ln.endswith(",dog")]]) + "\n")
    cfg = csv_config(tmp_path, tmp_path / "run", test=str(tmp_path / "test.csv"))
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    test = json.loads((tmp_path / "run" / "test.json").read_text())
    assert test["samples"] == 5 and list(test["per_class"]) == ["dog"]  # a test set of one class, mapped by name
    assert "(best.pt, epoch 1, 5 images)" in proc.stdout
    report = run_cli("report", str(tmp_path / "run"), "--data", str(tmp_path / "test.csv"))
    assert report.returncode == 0, report.stderr
    assert "5 val images" in (tmp_path / "run" / "report.html").read_text()


def test_a_split_file_that_is_not_trainkits_is_one_line(tmp_path):
    one_folder(tmp_path)
    assert run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", split_config(tmp_path, tmp_path / "run")))).returncode == 0  # fmt: skip
    for text in (json.dumps({"val": [{"a": 1}]}), "\x00\xff", json.dumps({"val": ["cat/000.png"], "split_seed": "x"})):
        (tmp_path / "run" / "split.json").write_text(text)
        proc = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"))
        assert_user_error(proc, "split.json: not ", "delete it to split again")
        assert proc.stderr.strip().endswith("delete it to split again")  # not "if the data has moved"
