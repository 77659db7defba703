"""The photo cache: images of many sizes stored once at a bounded resolution (`data.cache_size`), cropped and
resized in batches on the device, as torchvision does them one image at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli, tiny_config, write_yaml
from PIL import Image
from torchvision.transforms import v2

from trainkit.data import augment
from trainkit.data.images import ImageFolder

SIZES = [(40, 30), (30, 52), (64, 37), (33, 33), (90, 28)]  # (W, H): aspect ratios 0.6 to 3.2


def photos(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = SIZES[(i + c) % len(SIZES)]
            base = np.array([200, 40, 40] if c == 0 else [40, 40, 200], dtype=float)
            pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.jpg", quality=90)
    return root


def ragged(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for w, h in SIZES]


def test_resize_and_center_crop_match_torchvision():
    images = ragged()
    ours = augment.BatchAugment(v2.Compose([v2.Resize(24, antialias=True), v2.CenterCrop(20)]), torch.device("cpu"))
    assert not ours.fallbacks
    out = ours(images, torch.Generator().manual_seed(0))
    theirs = torch.stack([v2.CenterCrop(20)(v2.Resize(24, antialias=True)(img)) for img in images])
    assert out.shape == (5, 3, 20, 20) and out.dtype == torch.uint8
    assert (out.int() - theirs.int()).abs().max() <= 1  # the same antialiased bilinear resize, up to rounding


def test_random_resized_crop_in_batches():
    images = ragged()
    rrc = augment.BatchAugment(v2.RandomResizedCrop(16, scale=(0.3, 1.0)), torch.device("cpu"))
    assert not rrc.fallbacks
    a = rrc(images, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 16, 16)
    assert torch.equal(a, rrc(images, torch.Generator().manual_seed(1)))  # a batch's seed fixes its crops
    assert not torch.equal(a, rrc(images, torch.Generator().manual_seed(2)))
    # the whole image at its own aspect ratio is a plain resize
    whole = augment.BatchAugment(
        v2.RandomResizedCrop((20, 20), scale=(1.0, 1.0), ratio=(1.0, 1.0)), torch.device("cpu")
    )
    square = [images[3]]  # 33x33
    assert (whole(square, torch.Generator()).int() - v2.Resize((20, 20), antialias=True)(images[3])[None].int()).abs().max() <= 1  # fmt: skip


def test_photos_of_many_sizes_train_from_the_cache(tmp_path):
    data = tmp_path / "data"
    photos(data / "train"), photos(data / "val", per_class=3, seed=1)
    cfg = tiny_config(data, tmp_path / "run", train={"epochs": 2})
    cfg["data"] |= {"cache": "disk", "cache_dir": str(tmp_path / "cache"), "num_workers": 0}
    cfg["data"]["transforms"] = {
        "train": [{"RandomResizedCrop": {"size": 16, "scale": [0.5, 1.0]}}, "RandomHorizontalFlip", "ToTensor"],
        "val": [{"Resize": 18}, {"CenterCrop": 16}, "ToTensor"],
    }
    refused = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert_user_error(refused, "data.cache needs images of one size", "data.cache_size")
    cfg["data"]["cache_size"] = 24
    first = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert first.returncode == 0, first.stderr
    out = first.stdout + first.stderr
    assert "12 images of many sizes (shorter side 24 to 24 px" in out and "(disk," in out
    assert "per-sample fallback" not in out  # every transform ran batched
    again = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), "--overwrite")
    assert again.returncode == 0 and "disk hit" in again.stdout + again.stderr
    cfg["data"]["cache_size"] = 20  # another resolution: another store, never the old one
    other = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), "--overwrite")
    assert other.returncode == 0 and "shorter side 20 to 20 px" in other.stdout + other.stderr
    train_line = next(ln for ln in (other.stdout + other.stderr).splitlines() if ln.startswith("data.train:"))
    assert "disk hit" not in train_line  # (the val store holds the val crops of the originals, whatever the size)


def test_a_ragged_epoch_repeats_exactly(tmp_path):
    from trainkit.data.loaders import epoch_batches
    from trainkit.run import config
    from trainkit.run.build import build_run

    data = tmp_path / "data"
    photos(data / "train"), photos(data / "val", per_class=3, seed=1)
    raw = tiny_config(data, tmp_path / "run")
    raw["data"] |= {"cache": "memory", "cache_size": 24, "num_workers": 0, "batch_size": 5}
    raw["data"]["transforms"] = {"train": [{"RandomResizedCrop": 16}, "RandomHorizontalFlip", "ToTensor"],
                                 "val": [{"Resize": 18}, {"CenterCrop": 16}, "ToTensor"]}  # fmt: skip
    run = build_run(config.load_config(write_yaml(tmp_path / "c.yaml", raw)))
    first = [x for x, _ in epoch_batches(run.data.train_loader, 3)]
    second = [x for x, _ in epoch_batches(run.data.train_loader, 3)]
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, second))
    skipped = [x for x, _ in epoch_batches(run.data.train_loader, 3, skip=1)]  # a resume after one batch
    assert all(torch.equal(a, b) for a, b in zip(first[1:], skipped))
    assert not torch.equal(first[0], next(iter(epoch_batches(run.data.train_loader, 4)))[0])


def channels_last_images(seed: int = 0) -> list[torch.Tensor]:
    """`ragged()` laid out as the photo store keeps them: (C, H, W) views of (H, W, C) pixels."""
    return [img.permute(1, 2, 0).contiguous().permute(2, 0, 1) for img in ragged(seed)]


def test_the_store_keeps_pixels_as_decoded_and_serves_channels_last_views(tmp_path):
    from trainkit.data.cache import cache_dataset
    from trainkit.data.images import ImageFolder

    folder = photos(tmp_path / "train")
    ds = ImageFolder(str(folder), None, "data.train")
    cached = cache_dataset(ds, "memory", None, 1, "data.train", 200)  # no photo is shrunk at 200
    assert cached.shapes is not None and cached.offsets is not None
    for (path, _), (h, w), start in zip(ds.samples, cached.shapes.tolist(), cached.offsets.tolist()):
        decoded = torch.from_numpy(np.array(Image.open(path).convert("RGB")))  # (H, W, C)
        assert torch.equal(cached.images[start : start + 3 * h * w].view(h, w, 3), decoded)


def test_a_batch_of_a_host_store_goes_to_another_device_in_one_buffer(tmp_path):
    from trainkit.data.cache import cache_dataset, gathered, ragged_views

    ds_cached = cache_dataset(ImageFolder(str(photos(tmp_path / "train")), None, "data.train"), "memory", None, 1, "data.train", 200)  # fmt: skip
    spans = [(shape, start) for shape, start in zip(ds_cached.shapes.tolist(), ds_cached.offsets.tolist())][3:9]
    direct = ragged_views(ds_cached.images, spans, torch.device("cpu"))  # the store's device: views, no copy
    assert all(v.untyped_storage().data_ptr() == ds_cached.images.untyped_storage().data_ptr() for v in direct)
    flat, moved = gathered(ds_cached.images, spans)  # what goes to a GPU: the batch's photos, back to back
    assert flat.numel() == sum(3 * h * w for (h, w), _ in spans) and [s for _, s in moved][0] == 0
    again = [flat[s : s + 3 * h * w].view(h, w, 3).permute(2, 0, 1) for (h, w), s in moved]
    assert all(torch.equal(a, b) for a, b in zip(direct, again))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_ragged_batch_reaches_the_gpu_equal(tmp_path):
    from trainkit.data.cache import cache_dataset, ragged_views

    cached = cache_dataset(ImageFolder(str(photos(tmp_path / "train")), None, "data.train"), "memory", None, 1, "data.train", 200)  # fmt: skip
    spans = list(zip(cached.shapes.tolist(), cached.offsets.tolist()))
    on_gpu = ragged_views(cached.images, spans, torch.device("cuda"))
    assert all(torch.equal(g.cpu(), c) for g, c in zip(on_gpu, ragged_views(cached.images, spans, torch.device("cpu"))))


def test_channels_last_batches_stay_channels_last_and_match_the_planar_result():
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    t = v2.Compose(
        [v2.RandomResizedCrop(16, scale=(0.3, 1.0)), v2.RandomHorizontalFlip(), v2.ToImage(),
         v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )  # fmt: skip
    aug = augment.BatchAugment(t, torch.device("cpu"))
    assert len(aug.ops) == 4  # ToDtype(scale) and Normalize fused into one op
    planar = aug(ragged(), torch.Generator().manual_seed(3))
    last = aug(channels_last_images(), torch.Generator().manual_seed(3))
    assert planar.is_contiguous() and not last.is_contiguous()
    assert last.is_contiguous(memory_format=torch.channels_last)  # what a convolutional model takes, no copy
    assert (planar - last).abs().max() <= 1.0 / 255 / min(std) + 1e-5  # the same crops, up to resize rounding
    # the fused normalize against torchvision's, on a channels_last uint8 batch
    x = torch.stack(ragged(1)[:1] * 4)[:, :, :20, :20].contiguous(memory_format=torch.channels_last)
    fused = augment.BatchAugment(v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]), torch.device("cpu"))  # fmt: skip
    reference = v2.Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(fused(x, torch.Generator()), reference, atol=1e-5)
    one = augment.BatchAugment(v2.Normalize([0.5], [0.25]), torch.device("cpu"))  # one value for every channel
    assert torch.allclose(one(x.float(), torch.Generator()), (x.float() - 0.5) / 0.25)


def test_flip_on_channels_last_batches():
    x = augment.stack(channels_last_images()[3:4] * 8)  # 33x33, kept channels_last
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = augment.flip(1.0, 3)(x, torch.Generator())
    assert torch.equal(out, x.flip(3)) and out.is_contiguous(memory_format=torch.channels_last)
    half = augment.flip(0.5, 3)(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(half, x)]
    assert 0 < sum(flipped) < 8 and all(f or torch.equal(o, i) for f, o, i in zip(flipped, half, x))


def test_random_resized_crop_windows_are_in_bounds_and_vary():
    image = torch.randint(0, 256, (3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    exact = augment.BatchAugment(v2.RandomResizedCrop(20, scale=(0.25, 0.25), ratio=(1.0, 1.0)), torch.device("cpu"))
    out = exact([image] * 64, torch.Generator().manual_seed(5))  # a 20x20 window, no resize: the window itself
    windows = set()
    for crop in out:
        hits = [(i, j) for i in range(21) for j in range(21) if torch.equal(image[:, i : i + 20, j : j + 20], crop)]
        assert hits, "a crop is not a window of its image"
        windows.add(hits[0])
    assert len(windows) > 30  # each image draws its own window


def test_the_cached_val_path_serves_the_per_sample_pixels_so_eval_and_predict_agree(tmp_path):
    import json

    from trainkit.data import build as data
    from trainkit.data import transforms
    from trainkit.data.images import load_rgb
    from trainkit.data.loaders import epoch_batches
    from trainkit.run import config

    root = tmp_path / "data"
    photos(root / "train"), photos(root / "val", per_class=5, seed=1)
    cfg = tiny_config(root, tmp_path / "run", train={"epochs": 2})
    cfg["data"] |= {"cache": "memory", "cache_size": 24, "num_workers": 0, "val_batch_size": 3}
    norm = {"Normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}
    cfg["data"]["transforms"] = {
        "train": [{"RandomResizedCrop": {"size": 16}}, "ToTensor", norm],
        "val": [{"Resize": 18}, {"CenterCrop": 16}, "ToTensor", norm],
    }
    path = write_yaml(tmp_path / "c.yaml", cfg)
    d = data.build_data(config.load_config(path).data, 0, torch.device("cpu"), train=False)
    cached = torch.cat([x for x, _ in epoch_batches(d.val_loader, 0)])
    per_sample = transforms.build_transform(transforms.val_calls(config.load_config(path).data))
    expected = torch.stack([per_sample(load_rgb(p)) for p, _ in d.val_set.samples])
    # the same pixels: the cache stores the val crop of the full-resolution photo, not of its 24 px copy
    assert (cached.float() - expected).abs().max() < 1e-5
    assert run_cli("train", "--config", str(path)).returncode == 0
    ev = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "e.json"))
    assert ev.returncode == 0, ev.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["val_acc"] == pytest.approx(last["val_acc"])
    pred = run_cli(
        "predict", "--ckpt", str(tmp_path / "run" / "last.pt"), str(root / "val"), "--out", str(tmp_path / "p.csv")
    )
    assert pred.returncode == 0, pred.stderr
    assert f"accuracy on the 10 labelled images: {100 * result['val_acc']:.2f}%" in pred.stdout
