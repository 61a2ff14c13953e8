#!/usr/bin/env bash
# The GPU rehearsal of issue 16: one prepared script (at most 9.5 minutes: the sum of its timeouts) for a lent
# GPU machine, never CI. Not run yet: no session so far was lent a device.
#
# Here, once per machine:  make gpu-wheels      (the packages the device image lacks, into .whl/, git-ignored)
# On the device (the `device` tool's run):
#   command: bash experiments/gpu_check.sh    carry: [".whl", "data/processed/lakh-trio"]    timeout_s: 600
# What comes back under $OUT: the device tests' log, bench_train's tables (CUDA, bf16 and fp32, eager and
# compiled, MFU against --peak-flops), and the log and metrics of a short paper-preset run through the train CLI.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed (make gpu-wheels here, carry .whl)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

# 1. the tests that touch the device or the GPU's precision path (bf16-mixed, fused AdamW + clipping, compile)
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/backbones/test_layers.py tests/test_precision.py \
    tests/test_train.py 2>&1 | tail -n 30 | tee "$OUT/tests.log"

# 2. the training step on CUDA: the shipped trio's shape and the paper preset, bf16 and fp32, eager then compiled
timeout 150 python3 experiments/bench_train.py --device cuda --archs conv --presets small,paper --tracks trio \
    --overrides bar_depth=2 --precisions bf16,fp32 --steps 10 --warmup 3 2>&1 | tee "$OUT/bench_train.md"
timeout 150 python3 experiments/bench_train.py --device cuda --archs conv --presets small,paper --tracks trio \
    --overrides bar_depth=2 --precisions bf16 --steps 10 --warmup 3 --compile 2>&1 | tee "$OUT/bench_train_compiled.md"

# 3. the mission's command on a GPU (precision auto = bf16-mixed, fused AdamW, clipping), paper preset, briefly
timeout 120 python3 -m schmubert.train --arch conv --tracks trio --preset paper --data data/processed/lakh-trio \
    --max-steps 200 --val-every 100 --sample-every 0 --logger csv --num-workers 4 --out "$OUT" --name paper-gpu \
    2>&1 | tail -n 40 | tee "$OUT/train.log"
cp "$OUT"/paper-gpu/logs/metrics.csv "$OUT/train_metrics.csv" 2>/dev/null
rm -rf "$OUT/paper-gpu"
echo "gpu_check: done"
