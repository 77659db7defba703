"""The commands that use a trained model from its checkpoint alone: `predict`, `features`, `export`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from trainkit.commands.base import Command, add_trust
from trainkit.text import first_line, plural

CKPT_HELP = "a trainkit checkpoint (best.pt or last.pt); nothing else is needed"

PREDICT_EXAMPLES = """examples:
  trainkit predict --ckpt runs/flowers/best.pt photos/                 # a flat folder of new photos
  trainkit predict --ckpt runs/flowers/best.pt data/val --topk 3 --out predictions.csv
  trainkit predict --ckpt runs/digits/best.pt a.png b.png --out predictions.jsonl

Folders named after the checkpoint's classes (an ImageFolder tree) give each file its
true label, and the accuracy is printed."""

FEATURES_EXAMPLES = """examples:
  trainkit features --ckpt runs/flowers/best.pt --data data/flowers/val --layer 7 --out val.npz
  trainkit features --ckpt runs/x/best.pt --data photos --layer layer4 --layer fc --pool flatten --out f.npz

Layer names are those `trainkit inspect-shapes --ckpt CKPT` prints. In Python:
  f = numpy.load("val.npz"); f["7"], f["paths"], f["labels"], f["classes"]"""

EXPORT_EXAMPLES = """examples:
  trainkit export --ckpt runs/flowers/best.pt --format onnx --out flowers.onnx
  trainkit export --ckpt runs/flowers/best.pt --format torchscript --out flowers.pt --batch 1
  trainkit export --ckpt runs/digits/best.pt --format exported-program --out digits.pt2

FILE.json beside the export says how to feed it: classes, input size, channel order,
mean and std, and the transforms as configured."""


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, metavar="FILE", help=CKPT_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (read recursively)")
    p.add_argument("--topk", type=int, default=1, metavar="K", help="the K most likely labels per image (default 1)")
    p.add_argument("--out", metavar="FILE", help="write every prediction: FILE.csv or FILE.jsonl")
    _common(p)
    p.add_argument(
        "--tta", choices=("off", "flip", "flip_translate"), help="test-time augmentation (default: eval.tta)"
    )


def features_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, metavar="FILE", help=CKPT_HELP)
    p.add_argument("--data", required=True, nargs="+", metavar="PATH", help="image files and folders")
    p.add_argument("--layer", required=True, action="append", metavar="NAME", help="a layer's name (repeatable)")
    p.add_argument(
        "--pool",
        choices=("avg", "flatten", "none"),
        default="avg",
        help="avg: mean over the spatial axes (default); flatten: one row per image; none: the layer's shape",
    )
    p.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the features")
    _common(p)


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, metavar="FILE", help=CKPT_HELP)
    p.add_argument("--format", required=True, choices=("torchscript", "exported-program", "onnx"))
    p.add_argument("--out", required=True, metavar="FILE", help="the exported model; FILE.json is written beside it")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="default: a val image's size")
    p.add_argument("--batch", default="dynamic", metavar="dynamic|N", help="batch size: dynamic (default) or N")
    p.add_argument("--data", metavar="PATH", help="images to verify the export on (default: the run's val data)")
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    add_trust(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_trust(p)
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="images per batch (default: the checkpoint's data.val_batch_size, else data.batch_size)",
    )
    p.add_argument("--device", help="device to run on (default: the checkpoint's config)")
    p.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="a file that cannot be decoded: stop and name it (default), or skip it and list it",
    )


def _bad(skipped: list[str]) -> None:
    if skipped:
        what = plural(len(skipped), "file that cannot be decoded", "files that cannot be decoded")
        print(f"skipped {what}: " + "; ".join(skipped[:10]), file=sys.stderr)


def _check_positive(value: int | None, option: str) -> None:
    from trainkit.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"{option} {value}: give a whole number of at least 1")


def run_predict(args: argparse.Namespace) -> int:
    from trainkit.trained import load as trained
    from trainkit.trained import predict as inference

    inference.check_out(args.out, (".csv", ".jsonl"))
    _check_positive(args.topk, "--topk")
    _check_positive(args.batch_size, "--batch-size")
    t = trained.load_trained(args.ckpt, device=args.device, trust_code=args.trust_code)
    inputs = inference.find_images(args.paths, t.classes)
    hidden = inference.trained_on(t, inputs)
    with _model_errors(args.paths):
        rows, skipped = inference.predict_files(
            t, inputs, args.topk, args.batch_size, args.tta or t.tta, args.on_bad_image
        )
    _bad(skipped)
    if inputs.ignored:
        what = plural(len(inputs.ignored), "file is not an image and was", "files are not images and were")
        print(f"note: {what} passed over", file=sys.stderr)
    if not rows:
        raise _no_images(args.paths)
    print(inference.format_predictions(rows, t.labels))
    if hidden:
        print(f"(the accuracy leaves out {plural(hidden, 'image')} the run trained on: its split.json)")
    if args.out:
        inference.write_predictions(rows, args.out)
        print(f"\nwrote {args.out}")
    return 0


def run_features(args: argparse.Namespace) -> int:
    from trainkit.trained import load as trained
    from trainkit.trained import predict as inference

    inference.check_out(args.out, (".npz",))
    _check_positive(args.batch_size, "--batch-size")
    t = trained.load_trained(args.ckpt, device=args.device, trust_code=args.trust_code)
    inference.check_layers(t.model, args.layer)
    inputs = inference.find_images(args.data, t.classes, key="--data")
    with _model_errors(args.data):
        arrays, rows, skipped = inference.extract(t, inputs, args.layer, args.pool, args.batch_size, args.on_bad_image)
    _bad(skipped)
    if not rows:
        raise _no_images(args.data)
    inference.write_features(args.out, arrays, inputs, rows, t.classes)
    print(f"{len(rows)} images, features of {len(arrays)} layers:\n{inference.format_features(arrays)}")
    print(f"wrote {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from trainkit.trained import export

    report = export.export(args.ckpt, args.format, args.out, args.input_size, args.batch, args.data, args.trust_code)
    print(report)
    return 0


@contextlib.contextmanager
def _model_errors(paths: list[str]) -> Iterator[None]:
    """The model refusing the images (a shape it was not built for) is the input's problem: one line, exit 2."""
    from trainkit.errors import DataError

    try:
        yield
    except RuntimeError as exc:
        first = first_line(exc)
        raise DataError(
            f"{' '.join(paths)}: the model cannot take these images after the checkpoint's val transforms "
            f"({first}); give images like the ones it was trained on, or a checkpoint whose val transforms resize"
        ) from None


def _no_images(paths: list[str]) -> Exception:
    from trainkit.errors import DataError

    return DataError(f"{' '.join(paths)}: no image could be decoded; every file was skipped")


PREDICT = Command(
    "label image files and folders with a trained model", PREDICT_EXAMPLES, predict_arguments, run_predict
)
FEATURES = Command(
    "save the outputs of named layers for image files (forward hooks)",
    FEATURES_EXAMPLES,
    features_arguments,
    run_features,
)
EXPORT = Command(
    "write the model as TorchScript, an ExportedProgram or ONNX, verified",
    EXPORT_EXAMPLES,
    export_arguments,
    run_export,
)
