"""`trainkit predict` against `trainkit eval` on the same real photos (issue 17): images/s of each.

    python benchmarks/predict_speed.py        # the 736 flowers val photos (unpacked once to /tmp)

Both run in this process on one checkpoint (a 1-epoch run of configs/flowers.yaml, trained once if
missing; speed does not depend on accuracy): eval's loop over its val loader (`evaluation.evaluate`)
and predict's (`inference.predict_files`, top-1, no --out) over the same files, alternately, three rounds
each after one warm-up round. The goal: predict's images/s at least eval's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import unpack  # noqa: E402

from trainkit.data.loaders import epoch_batches  # noqa: E402
from trainkit.models import optim  # noqa: E402
from trainkit.run.evaluation import evaluate  # noqa: E402
from trainkit.trained import predict as inference  # noqa: E402
from trainkit.trained.load import load_trained  # noqa: E402

TARBALL = ROOT.parent / "shared" / "data" / "flowers-photos.tar.gz"
DEST = Path("/tmp/trainkit-bench-flowers")


def checkpoint(flowers: Path) -> Path:
    run = DEST / "run-1ep"
    if not (run / "best.pt").exists():
        sets = [f"data.train={flowers / 'train'}", f"data.val={flowers / 'val'}", "train.epochs=1"]
        args = ["train", "--config", str(ROOT / "configs" / "flowers.yaml"), "--run-dir", str(run), "--overwrite"]
        subprocess.run([sys.executable, "-m", "trainkit", *args, *[a for s in sets for a in ("--set", s)]], check=True)
    return run / "best.pt"


def main() -> None:
    flowers = unpack(TARBALL, DEST) / "flowers"
    t = load_trained(checkpoint(flowers), device="cpu")
    d = t.val_data()
    loss_fn = optim.build_loss(t.cfg.train.loss, t.classes)
    inputs = inference.find_images([str(flowers / "val")], t.classes)
    n = len(inputs.paths)

    def run_eval() -> float:
        start = time.perf_counter()
        meters = evaluate(t.model, epoch_batches(d.val_loader, 0), loss_fn, t.device, len(t.classes), t.channels_last)
        assert meters.summary()["samples"] == n
        return n / (time.perf_counter() - start)

    def run_predict() -> float:
        start = time.perf_counter()
        rows, _ = inference.predict_files(t, inputs, 1, None, "off", "error")
        assert len(rows) == n
        return n / (time.perf_counter() - start)

    run_eval(), run_predict()  # warm-up: page cache, worker start, allocator
    rates: dict[str, list[float]] = {"eval": [], "predict": []}
    for _ in range(3):
        rates["eval"].append(run_eval())
        rates["predict"].append(run_predict())
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "images": n,
        "batch_size": t.cfg.data.eval_batch_size,
        "num_workers": t.cfg.data.num_workers,
        "images_per_s": rates,
        "median": median,
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / f"predict-cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    ratio = median["predict"] / median["eval"]
    print(f"predict {median['predict']:.0f} images/s, eval {median['eval']:.0f} images/s on {n} photos: {ratio:.2f}x")
    if ratio < 0.95:  # 5% is this machine's round-to-round noise
        raise SystemExit("predict is slower than eval on the same images")


if __name__ == "__main__":
    main()
