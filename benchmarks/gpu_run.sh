#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): the GPU column of `make bench`, then
# configs/cifar10_fast.yaml on the full CIFAR-10 JPEGs, timed to 94% test accuracy.
# Needs, carried from the workstation: .whl/ (torchnet, visdom and the visdom deps the image lacks)
# and .gpu/cifar10-jpg.tar.gz. Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi -L; python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/gpu.txt"
python3 benchmarks/bench.py --device cuda --steps "${BENCH_STEPS:-100}" --reps 5 --tarball .gpu/cifar10-jpg.tar.gz \
  --work data/cifar10 --out "$OUT" 2>&1 | tee "$OUT/bench.log"
python3 -m trainkit train --config configs/cifar10_fast.yaml --run-dir /tmp/fast ${FAST_SET:-} 2>&1 | grep -v " step " | tee "$OUT/fast.log"
cp /tmp/fast/metrics.jsonl "$OUT/fast-metrics.jsonl"
python3 benchmarks/time_to_acc.py /tmp/fast/metrics.jsonl 0.94 | tee -a "$OUT/fast.log"
