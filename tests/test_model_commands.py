"""`trainkit predict`, `features` and `export` on a real trained checkpoint, through the real CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml

CLASSES = ["bird", "cat", "dog"]
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint of a small conv net with BatchNorm and Normalize, one epoch (so not every image is right)."""
    root = tmp_path_factory.mktemp("model")
    data = root / "data"
    make_image_folder(data / "train", dict.fromkeys(CLASSES, 10), size=12, seed=3)
    make_image_folder(data / "val", dict.fromkeys(CLASSES, 7), size=12, seed=4)
    cfg = tiny_config(
        data,
        root / "run",
        num_classes=3,
        train={"epochs": 1, "log_every": 5},
        data={
            "dataset": "imagefolder",
            "train": str(data / "train"),
            "val": str(data / "val"),
            "batch_size": 6,
            "num_workers": 0,
            "transforms": {"train": ["ToTensor", {"Normalize": {"mean": MEAN, "std": STD}}]},
        },
        model={
            "sequential": [
                {"Conv2d": [3, 6, 3, 1, 1]},
                {"BatchNorm2d": [6]},
                {"ReLU": {}},
                {"AdaptiveAvgPool2d": [2]},
                "Flatten",
                {"Linear": [24, 3]},
            ]
        },
        optim={"type": "SGD", "lr": 0.05},
    )
    proc = run_cli("train", "--config", str(write_yaml(root / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    return root / "run" / "best.pt", data / "val"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_agrees_with_eval_image_by_image(tmp_path, trained):
    ckpt, val = trained
    ev = run_cli("eval", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval.json"))
    assert ev.returncode == 0, ev.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    pred = run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path / "p.csv"), "--batch-size", "4")
    assert pred.returncode == 0, pred.stderr
    rows = read_csv(tmp_path / "p.csv")
    assert len(rows) == result["samples"] == 21
    confusion = np.zeros((3, 3), dtype=int)
    for r in rows:
        confusion[CLASSES.index(Path(r["path"]).parent.name), CLASSES.index(r["label"])] += 1
    assert confusion.tolist() == result["confusion"]  # cell by cell: the same image gets the same label
    right = int(np.trace(confusion))
    assert f"accuracy on the 21 labelled images: {100 * right / 21:.2f}%" in pred.stdout
    assert right / 21 == pytest.approx(result["val_acc"])
    assert "predicted per class:" in pred.stdout


def test_predict_a_flat_folder_top_k_as_json_lines(tmp_path, trained):
    ckpt, val = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(sorted(val.rglob("*.png"))):
        shutil.copy(p, photos / f"{i:02d}.png")
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.png").write_bytes(b"")
    out = tmp_path / "p.jsonl"
    proc = run_cli("predict", "--ckpt", str(ckpt), str(photos), "--topk", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 21 and all("true" not in r for r in records)  # no class folders: no labels
    for r in records:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and sum(probs) <= 1 + 1e-6
        assert r["label"] == r["top"][0]["label"] and r["label"] in CLASSES
    assert "accuracy" not in proc.stdout
    assert "1 file is not an image and was passed over" in proc.stderr


def test_a_bad_image_is_named_or_skipped(tmp_path, trained):
    ckpt, val = trained
    photos = tmp_path / "cat"  # a folder named after a class: its files are labelled
    shutil.copytree(val / "cat", photos)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    out = tmp_path / "p.csv"
    err = run_cli("predict", "--ckpt", str(ckpt), str(photos), "--out", str(out))
    assert_user_error(err, "broken.png", "--on-bad-image skip")
    assert not out.exists()
    ok = run_cli("predict", "--ckpt", str(ckpt), str(photos), "--out", str(out), "--on-bad-image", "skip")
    assert ok.returncode == 0, ok.stderr
    assert "skipped 1 file that cannot be decoded" in ok.stderr and "broken.png" in ok.stderr
    rows = read_csv(out)
    assert len(rows) == 7 and not any("broken" in r["path"] for r in rows)
    assert "accuracy on the 7 labelled images" in ok.stdout


def test_features_of_named_layers(tmp_path, trained):
    ckpt, val = trained
    out = tmp_path / "f.npz"
    proc = run_cli("features", "--ckpt", str(ckpt), "--data", str(val), "--layer", "1", "--layer", "5", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    f = np.load(out)
    assert set(f.files) == {"1", "5", "paths", "labels", "classes"}
    assert f["1"].shape == (21, 6) and f["5"].shape == (21, 3) and f["1"].dtype == np.float32
    assert list(f["classes"]) == CLASSES
    assert [CLASSES[i] for i in f["labels"]] == [Path(p).parent.name for p in f["paths"]]
    # the last layer's output is the logits: its softmax is predict's probability
    pred = run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path / "p.jsonl"))
    probs = {r["path"]: r["prob"] for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    logits = f["5"]
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    assert pred.returncode == 0
    assert soft.max(1) == pytest.approx([probs[p] for p in f["paths"]], abs=1e-5)

    for pool, shape in (("none", (21, 6, 12, 12)), ("flatten", (21, 864))):
        proc = run_cli("features", "--ckpt", str(ckpt), "--data", str(val), "--layer", "0", "--pool", pool, "--out", str(out))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert np.load(out)["0"].shape == shape

    bad = run_cli("features", "--ckpt", str(ckpt), "--data", str(val), "--layer", "Flaten", "--out", str(out))
    assert_user_error(bad, "--layer Flaten", "its layers: 0, 1, 2, 3, 4, 5")


def test_features_hooks_are_removed(trained):
    from trainkit.trained import predict as inference
    from trainkit.trained.load import load_trained

    ckpt, val = trained
    t = load_trained(ckpt, device="cpu")
    arrays, rows, skipped = inference.extract(
        t, inference.find_images([str(val)], t.classes), ["2", "4"], "avg", 5, "error"
    )
    assert len(rows) == 21 and not skipped and arrays["4"].shape == (21, 24)
    assert all(not m._forward_hooks for m in t.model.modules())
    with pytest.raises(Exception, match="no such layer"):
        inference.extract(t, inference.find_images([str(val)], t.classes), ["9"], "avg", 5, "error")
    assert all(not m._forward_hooks for m in t.model.modules())


FRESH = """
import json, sys
import numpy as np
from PIL import Image
fmt, model_path, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
side = json.load(open(model_path + ".json"))
mean = np.array(side["mean"], dtype=np.float32)[:, None, None]
std = np.array(side["std"], dtype=np.float32)[:, None, None]
x = np.stack([(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255 - mean) / std
              for p in paths]).astype(np.float32)
if fmt == "onnx":
    import onnxruntime
    logits = onnxruntime.InferenceSession(model_path).run(["logits"], {"images": x})[0]
else:
    import torch
    model = torch.jit.load(model_path) if fmt == "torchscript" else torch.export.load(model_path).module()
    logits = model(torch.from_numpy(x)).detach().numpy()
assert "trainkit" not in sys.modules
print(json.dumps([side["classes"][i] for i in logits.argmax(1)]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("exported-program", ".pt2"), ("onnx", ".onnx")])
def test_export_loads_without_trainkit_and_predicts_the_same(tmp_path, trained, fmt, suffix):
    ckpt, val = trained
    out = tmp_path / f"model{suffix}"
    proc = run_cli("export", "--ckpt", str(ckpt), "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verified on 8 val images: the largest difference of the logits is" in proc.stdout
    side = json.loads((tmp_path / f"model{suffix}.json").read_text())
    assert side["classes"] == CLASSES and side["input_size"] == [3, 12, 12] and side["channel_order"] == "RGB"
    assert side["mean"] == MEAN and side["std"] == STD and side["max_abs_diff"] <= 1e-4
    assert [t["name"] for t in side["transforms"]] == ["ToTensor", "Normalize"]

    pred = run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path / "p.csv"))
    rows = read_csv(tmp_path / "p.csv")
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH, fmt, str(out), *[r["path"] for r in rows]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert pred.returncode == 0 and fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout.splitlines()[-1]) == [r["label"] for r in rows]


def test_an_export_that_differs_is_not_written(tmp_path, trained, monkeypatch):
    from trainkit.errors import TrainingError
    from trainkit.trained import export

    ckpt, _ = trained
    out = tmp_path / "model.pt2"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # every difference, even 0, is too large
    monkeypatch.setattr(export, "RELATIVE", 0.0)
    with pytest.raises(TrainingError, match="nothing was written"):
        export.export(str(ckpt), "exported-program", str(out), None, "dynamic", None)
    assert out.read_bytes() == b"an earlier export" and not (tmp_path / "model.pt2.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # no temporary file left


def test_bad_inputs_are_one_line(tmp_path, trained):
    ckpt, val = trained
    missing = str(tmp_path / "nope.pt")
    assert_user_error(run_cli("predict", "--ckpt", missing, str(val)), "nope.pt", "not found")
    assert_user_error(run_cli("features", "--ckpt", missing, "--data", str(val), "--layer", "0", "--out", str(tmp_path / "f.npz")), "not found")  # fmt: skip
    assert_user_error(run_cli("export", "--ckpt", missing, "--format", "onnx", "--out", str(tmp_path / "m.onnx")), "not found")  # fmt: skip
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("predict", "--ckpt", str(ckpt), str(tmp_path / "empty")), "no image files")
    assert_user_error(run_cli("predict", "--ckpt", str(ckpt), str(tmp_path / "absent")), "no such file or folder")
    assert_user_error(run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path / "no" / "p.csv")), "does not exist")  # fmt: skip
    assert_user_error(run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path / "p.txt")), ".csv or .jsonl")  # fmt: skip
    assert_user_error(run_cli("predict", "--ckpt", str(ckpt), str(val), "--out", str(tmp_path)), "is a folder")
    assert_user_error(run_cli("export", "--ckpt", str(ckpt), "--format", "tflite", "--out", "m"), "invalid choice", "--help")  # fmt: skip
    assert_user_error(run_cli("export", "--ckpt", str(ckpt), "--format", "exported-program", "--out", str(tmp_path / "m.pt")), ".pt2")  # fmt: skip
    assert_user_error(run_cli("export", "--ckpt", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--batch", "x"), "--batch x")  # fmt: skip
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.csv"))


@pytest.mark.slow
def test_features_of_real_photos_are_useful(tmp_path, flowers):
    """A linear classifier on the penultimate layer's features does about as well as the model itself."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sets = [f"data.train={flowers / 'train'}", f"data.val={flowers / 'val'}", "train.epochs=6", "log.report=false"]
    args = ["--config", str(Path(__file__).parents[1] / "configs" / "flowers.yaml"), "--run-dir", str(tmp_path / "run")]
    proc = run_cli("train", *args, *[a for s in sets for a in ("--set", s)], timeout=1200)
    assert proc.returncode == 0, proc.stderr
    ckpt = tmp_path / "run" / "best.pt"
    features = {}
    for split in ("train", "val"):
        out = tmp_path / f"{split}.npz"
        proc = run_cli("features", "--ckpt", str(ckpt), "--data", str(flowers / split), "--layer", "flatten", "--out", str(out))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        features[split] = np.load(out)
    assert features["train"]["flatten"].shape == (1623, 128) and features["val"]["flatten"].shape == (736, 128)
    assert (features["val"]["labels"] >= 0).all()  # an ImageFolder tree: every photo is labelled
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(features["train"]["flatten"], features["train"]["labels"])
    linear = clf.score(features["val"]["flatten"], features["val"]["labels"])
    ev = run_cli("eval", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval.json"))
    own = json.loads((tmp_path / "eval.json").read_text())["val_acc"]
    print(f"flowers: the checkpoint's val accuracy {own:.4f}, a logistic regression on its features {linear:.4f}")
    assert ev.returncode == 0 and own > 0.5  # a model that learned something
    assert linear >= own - 0.05, (linear, own)


def test_images_the_model_cannot_take_are_one_line(tmp_path, tiny_data):
    model = {"sequential": [{"Conv2d": [3, 4, 3, 1, 1]}, "Flatten", {"Linear": [4 * 16 * 16, 2]}]}
    cfg = tiny_config(tiny_data, tmp_path / "run", model=model, train={"epochs": 1})
    assert run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))).returncode == 0
    photos = make_image_folder(tmp_path / "photos", {"cat": 2}, size=20)  # 20 px: the Linear expects 16 px
    proc = run_cli("predict", "--ckpt", str(tmp_path / "run" / "best.pt"), str(photos))
    assert_user_error(proc, "the model cannot take these images", "shapes cannot be multiplied")
