"""data: ImageFolder and CIFAR datasets, transforms, samplers, bad images, seeding."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from trainkit.data import build as data
from trainkit.data import transforms
from trainkit.data.loaders import epoch_batches
from trainkit.data.schema import DataConfig
from trainkit.errors import ConfigError, DataError
from trainkit.run import config


def data_cfg(tmp_path: Path, text: str) -> DataConfig:
    path = tmp_path / "cfg.yaml"
    path.write_text(text + "\nmodel: {sequential: [Flatten]}\n")
    return config.load_config(path).data


def folder_cfg(tmp_path: Path, root: Path, extra: str = "") -> DataConfig:
    # the defaults that `extra` does not set itself (a key given twice is an error)
    defaults = "".join(f", {k}: {v}" for k, v in (("num_workers", 0), ("batch_size", 4)) if f" {k}:" not in extra)
    return data_cfg(tmp_path, f"data: {{train: {root / 'train'}, val: {root / 'val'}{defaults}{extra}}}")


def build(cfg, seed=0):
    return data.build_data(cfg, seed, torch.device("cpu"))


def epoch_labels(d: data.Data, epoch: int) -> list[int]:
    return [int(v) for _, y in epoch_batches(d.train_loader, epoch) for v in y]


def test_imagefolder_classes_hidden_folders_and_non_images(tmp_path, tiny_data):
    (tiny_data / "train" / ".ipynb_checkpoints").mkdir()
    (tiny_data / "train" / ".ipynb_checkpoints" / "x.png").write_bytes(b"")
    (tiny_data / "train" / "cat" / "notes.txt").write_text("not an image")
    (tiny_data / "train" / "cat" / "._resource.png").write_bytes(b"junk")
    d = build(folder_cfg(tmp_path, tiny_data))
    assert d.classes == ["cat", "dog"]
    assert len(d.train_set) == 24 and len(d.val_set) == 10
    x, y = next(epoch_batches(d.train_loader, 0))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_val_classes_must_be_among_trains(tmp_path, tiny_data):
    (tiny_data / "val" / "dog").rename(tiny_data / "val" / "bird")
    with pytest.raises(DataError, match=r"data.val: 1 class not among the training classes: bird; the training classes are cat, dog"):  # fmt: skip
        build(folder_cfg(tmp_path, tiny_data))
    (tiny_data / "val" / "bird").rename(tiny_data / "val" / "cat2")
    shutil.rmtree(tiny_data / "val" / "cat2")
    d = build(folder_cfg(tmp_path, tiny_data))  # val of some of the classes: mapped by name
    assert d.classes == ["cat", "dog"] and set(d.val_set.targets) == {0}


def test_empty_class_folder_and_missing_folder_are_named(tmp_path, tiny_data):
    (tiny_data / "train" / "emu").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/emu has no image files"):
        build(folder_cfg(tmp_path, tiny_data))
    cfg = data_cfg(tmp_path, f"data: {{train: {tmp_path / 'nope'}, val: {tiny_data / 'val'}}}")
    with pytest.raises(DataError, match=r"data.train: folder .*nope does not exist"):
        build(cfg)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    root = tmp_path / "d"
    make_image_folder(root / "train", {"a": 2, "b": 2}, mode=mode if mode != "CMYK" else "RGB", ext="png")
    make_image_folder(root / "val", {"a": 1, "b": 1}, ext="png")
    if mode == "CMYK":
        for p in (root / "train" / "a").iterdir():
            Image.open(p).convert("CMYK").save(p.with_suffix(".jpg"))
            p.unlink()
    d = build(folder_cfg(tmp_path, root))
    x, _ = d.train_set[0]
    assert x.shape == (3, 16, 16)


def write_cifar(root: Path, kind: str, n_per_batch: int = 6) -> list[str]:
    """A tiny archive in the exact CIFAR pickle format (same keys, dtypes and layout)."""
    rng = np.random.default_rng(0)
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        label_key, meta_name, meta = "labels", "batches.meta", {"label_names": classes}
    else:
        folder = root / "cifar-100-python"
        names = ["train", "test"]
        classes = [f"class{i:02d}" for i in range(100)]
        label_key, meta_name, meta = "fine_labels", "meta", {"fine_label_names": classes}
    folder.mkdir(parents=True)
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, len(classes), n_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / meta_name).write_bytes(pickle.dumps(meta))
    return classes


@pytest.mark.parametrize("kind,n_train", [("cifar10", 30), ("cifar100", 6)])
def test_cifar_loads_through_torchvision(tmp_path, kind, n_train):
    classes = write_cifar(tmp_path / "cifar", kind)
    d = build(data_cfg(tmp_path, f"data: {{dataset: {kind}, root: {tmp_path / 'cifar'}, num_workers: 0}}"))
    assert d.classes == classes
    assert len(d.train_set) == n_train and len(d.val_set) == 6
    x, y = d.val_set[0]
    assert x.shape == (3, 32, 32) and 0 <= y < len(classes)


def test_cifar_missing_says_where_and_how(tmp_path):
    cfg = data_cfg(tmp_path, f"data: {{dataset: cifar10, root: {tmp_path / 'none'}}}")
    with pytest.raises(DataError, match=r"none/cifar-10-batches-py.*cifar-10-python.tar.gz.*download: true"):
        build(cfg)


def test_transforms_built_in_order_and_unknown_name(tmp_path, tiny_data):
    cfg = folder_cfg(
        tmp_path,
        tiny_data,
        ", transforms: {train: [{RandomCrop: {size: 12}}, ToTensor, {Normalize: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]}",
    )
    d = build(cfg)
    assert d.train_set[0][0].shape == (3, 12, 12)
    val_names = [c.name for c in transforms.val_calls(cfg)]
    assert val_names == ["ToTensor", "Normalize"]  # val defaults to ToTensor + train's Normalize
    raw = np.array(Image.open(d.val_set.samples[0][0]).convert("RGB"))
    expected = (torch.from_numpy(raw).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(d.val_set[0][0], expected, atol=1e-6)
    with pytest.raises(
        ConfigError, match=r"data.transforms.train\[0\]: unknown transform 'RandomCorp'; did you mean 'RandomCrop'"
    ):
        folder_cfg(tmp_path, tiny_data, ", transforms: {train: [{RandomCorp: {size: 12}}]}")


def test_pipeline_without_tensor_output_is_an_error(tmp_path, tiny_data):
    d = build(folder_cfg(tmp_path, tiny_data, ", transforms: {train: [{Resize: [8]}]}"))
    with pytest.raises(ConfigError, match="end them with ToTensor"):
        data.first_sample_shape(d.train_set, "data.transforms.train")


def uneven(tmp_path: Path) -> Path:
    root = tmp_path / "uneven"
    make_image_folder(root / "train", {"cat": 30, "dog": 10, "emu": 5}, size=4)
    make_image_folder(root / "val", {"cat": 1, "dog": 1, "emu": 1}, size=4)
    return root


@pytest.mark.parametrize(
    "weights,expected",
    [
        ("balanced", [1 / 3, 1 / 3, 1 / 3]),
        ("{cat: 1.0, dog: 3.0, emu: 0.0}", [30 / 60, 30 / 60, 0.0]),
        ("{emu: 4.0}", [30 / 60, 10 / 60, 20 / 60]),  # unnamed classes weigh 1.0
    ],
)
@pytest.mark.slow
def test_weighted_sampler_draws_the_expected_class_mix(tmp_path, weights, expected):
    root = uneven(tmp_path)
    cfg = folder_cfg(
        tmp_path, root, f", batch_size: 500, sampler: {{type: weighted, class_weights: {weights}, num_samples: 6000}}"
    )
    d = build(cfg)
    assert np.allclose(d.class_mix, expected)
    labels = torch.cat([y for _, y in epoch_batches(d.train_loader, 0)]).numpy()
    assert len(labels) == 6000
    freq = np.bincount(labels, minlength=3) / len(labels)
    # 6000 draws: the binomial standard deviation is at most 0.0065; allow 3 sigma.
    assert np.allclose(freq, expected, atol=0.02), (freq, expected)
    assert "expected class mix (weighted sampler): cat" in d.mix_line()


def test_weighted_sampler_unknown_class_is_an_error(tmp_path):
    root = uneven(tmp_path)
    cfg = folder_cfg(tmp_path, root, ", sampler: {type: weighted, class_weights: {cat: 1.0, dgo: 2.0}}")
    with pytest.raises(ConfigError, match=r"data.sampler.class_weights.dgo: no class named 'dgo'; did you mean 'dog'"):
        build(cfg)


def test_random_and_sequential_samplers_and_seeded_order(tmp_path, tiny_data):
    seq = build(folder_cfg(tmp_path, tiny_data, ", sampler: sequential"))
    assert epoch_labels(seq, 0) == [0] * 12 + [1] * 12
    rnd = build(folder_cfg(tmp_path, tiny_data))
    first = epoch_labels(rnd, 0)
    assert sorted(first) == [0] * 12 + [1] * 12 and first != [0] * 12 + [1] * 12
    again = build(folder_cfg(tmp_path, tiny_data))
    assert epoch_labels(again, 0) == first  # same seed, same order
    assert epoch_labels(again, 0) == first  # an epoch's order does not depend on what ran before
    orders = {tuple(epoch_labels(rnd, e)) for e in range(4)}
    assert len(orders) > 1
    other = build(folder_cfg(tmp_path, tiny_data), seed=1)
    assert epoch_labels(other, 0) != first


def write_bad_images(folder: Path) -> list[Path]:
    good = next(folder.iterdir())
    Image.open(good).convert("RGB").save(folder / "full.jpg")
    raw = (folder / "full.jpg").read_bytes()
    bad = [folder / "truncated.jpg", folder / "zero.jpg", folder / "corrupt.jpg", folder / "text.jpg"]
    bad[0].write_bytes(raw[: len(raw) // 2])
    bad[1].write_bytes(b"")
    bad[2].write_bytes(raw[:20] + bytes(range(256)) * 4)
    bad[3].write_text("this is not an image\n")
    (folder / "full.jpg").unlink()
    return bad


@pytest.mark.parametrize("name", ["truncated.jpg", "zero.jpg", "corrupt.jpg", "text.jpg"])
def test_bad_image_error_names_the_file(tmp_path, tiny_data, name):
    bad = write_bad_images(tiny_data / "train" / "cat")
    for p in bad:
        if p.name != name:
            p.unlink()
    with pytest.raises(
        DataError, match=rf"data.train: 1 file is not a readable image: .*cat/{name}.*on_bad_image: skip"
    ):
        build(folder_cfg(tmp_path, tiny_data, ", sampler: sequential"))  # found at start, before any batch


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_skipped_and_counted(tmp_path, tiny_data, workers):
    write_bad_images(tiny_data / "train" / "cat")
    # whole header and end marker, garbage between: it passes the check at start and fails to decode
    deep = tiny_data / "train" / "dog" / "deep.jpg"
    deep.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    d = build(folder_cfg(tmp_path, tiny_data, f", on_bad_image: skip, num_workers: {workers}"))
    assert [n for n in d.notes if "skipping 4 files that are not readable images" in n]
    seen = sum(len(y) for _, y in epoch_batches(d.train_loader, 0))
    assert seen == 24 and d.bad.take() == (1, [f"{deep} (no image decoder can identify it)"])
    seen = sum(len(y) for _, y in epoch_batches(d.train_loader, 1))
    assert seen == 24 and d.bad.take() == (1, [])  # counted again, named once


def test_sample_grid_is_unnormalized(tmp_path, tiny_data):
    cfg = folder_cfg(
        tmp_path,
        tiny_data,
        ", transforms: {train: [ToTensor, {Normalize: {mean: [0.5, 0.5, 0.5], std: [0.1, 0.1, 0.1]}}]}",
    )
    d = build(cfg)
    grid = data.sample_grid(d, count=4)
    from torchvision.utils import save_image

    save_image(grid, tmp_path / "samples.png")
    assert grid.min() >= 0 and grid.max() <= 1
    img = np.asarray(Image.open(tmp_path / "samples.png"))
    assert img.shape[2] == 3 and 0 < img.mean() < 255  # real pictures, not saturated normalized values


def test_a_dataset_of_one_class_is_one_line(tmp_path):
    from conftest import assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml

    make_image_folder(tmp_path / "train", {"cat": 6})
    make_image_folder(tmp_path / "val", {"cat": 2})
    cfg = tiny_config(tmp_path, tmp_path / "run")  # (it raised AssertionError: target and output do not match)
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert_user_error(proc, "data.train: one class, 'cat'; a classifier needs at least two classes")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: os.symlink("..", d / "train" / "cat" / "up"), "leads back to"),  # it hung for 120 s+ at 3.3 GB
        (lambda d: os.symlink("loop", d / "train" / "loop"), "a symlink loop; remove it"),  # an ELOOP traceback
        (lambda d: os.symlink("/proc", d / "train" / "cat" / "proc"), "cat/proc"),  # a loop in it, or its files
    ],
    ids=["loop-to-parent", "link-to-itself", "proc-inside"],
)
def test_a_data_scan_is_bounded_and_loops_are_named(tmp_path, tiny_data, damage, fragment):
    import time

    from conftest import assert_user_error, run_cli, tiny_config, write_yaml

    damage(tiny_data)
    cfg = write_yaml(
        tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run", data={"scan": {"max_other_files": 500}})
    )
    start = time.monotonic()
    proc = run_cli("train", "--config", str(cfg), timeout=120)
    assert_user_error(proc, "data.train:", fragment)
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()


def test_proc_as_the_val_folder_is_one_line(tmp_path, tiny_data):
    from conftest import assert_user_error, run_cli, tiny_config, write_yaml

    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run"))
    proc = run_cli("train", "--config", str(cfg), "--set", "data.val=/proc", timeout=120)
    assert_user_error(proc, "data.val:")


def test_linked_folders_are_followed_once_in_torchvisions_order(tmp_path, tiny_data):
    from trainkit.data.images import scan

    elsewhere = tmp_path / "more-cats"
    shutil.copytree(tiny_data / "train" / "cat", elsewhere)
    os.symlink(elsewhere, tiny_data / "train" / "cat" / "linked")
    images, others = scan(str(tiny_data / "train" / "cat"), "data.train", 10, 4)
    assert len(images) == 24 and others == []
    assert images == sorted(images, key=lambda p: (os.path.dirname(p), p))
