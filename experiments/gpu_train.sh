#!/usr/bin/env bash
# A shipped model's next training stage on a lent GPU machine, never CI: one prepared command for the device tool
# (its whole budget is 15 minutes a session, start-up included). Its first use is the melody's stage 6
# (recipe melody-long2: the rest of issue 18's 10x training FLOPs, ~3.6 h on 2 AMX cores, 12.7 h on 2 AVX2 ones).
#
# Here, once per machine:  make gpu-wheels; make the dataset the recipe trains on (data/processed/lakh-melody:
#   python -m preprocessing --tracks melody --input ../shared/corpus/lakh-melody-64bar \
#       --output data/processed/lakh-melody --workers 2 --valid-fraction 0.05 --overwrite)
# On the device (the `device` tool's run):
#   command: bash experiments/gpu_train.sh    carry: [".whl", "data/processed/lakh-melody"]    timeout_s: 600
#   (RECIPE, MODEL, INIT, DATA, MAX_TIME, CFG_SCALE and EXTRA override the defaults below; a later part of a schedule
#   trained in parts: INIT=the previous part's export, EXTRA="--start-step N", N from its provenance)
# What comes back under $OUT: the training log and metrics, and the exported model (MODEL.safetensors and its
# held-out windows, fp16, the copy prior fitted on the device) to measure on the CPU here before it replaces
# schmubert/weights/ (experiments/README.md: `evaluate elbo`, bench_decoding.py, bench_control.py, the card).
# The run stops at MAX_TIME (DD:HH:MM:SS) whatever its step: the log says which step it reached; a run cut before
# its last step has not finished its learning-rate decay, so measure it as such or do not ship it. Not run on a
# GPU yet (no session has been lent one): its steps per second there are unknown. Rehearsed on the CPU with
# EXTRA="--max-steps 3 --val-every 3" in a copy of the tree (the export replaces that copy's weights): 6 min 47 s
# on 2 AVX2 cores, most of it the export's copy-prior fit.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-train}
RECIPE=${RECIPE:-melody-long2}
MODEL=${MODEL:-melody}
INIT=${INIT:-pretrained:$MODEL}
MAX_TIME=${MAX_TIME:-00:00:06:00}
CFG_SCALE=${CFG_SCALE:-}
EXTRA=${EXTRA:-}
DATA=${DATA:-data/processed/lakh-$MODEL}  # the pop909 model: DATA=data/processed/pop909 (carry it)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import schmubert, pretty_midi, symusic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_train: installing the carried wheels failed (make gpu-wheels here, carry .whl)"
                        exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
[ -f "$DATA/train.npy" ] || { echo "gpu_train: $DATA/train.npy missing (preprocess here, carry $DATA)"; exit 1; }
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"

# shellcheck disable=SC2086  # EXTRA is a list of options
python3 -m schmubert.train --recipe "$RECIPE" --data "$DATA" --init "$INIT" --max-time "$MAX_TIME" \
    --logger csv --num-workers 4 --sample-every 0 --out "$OUT/runs" --name "$RECIPE" $EXTRA 2>&1 \
    | tr '\r' '\n' | grep -v "^$" | tail -n 60 | tee "$OUT/train.log"
CKPT="$OUT/runs/$RECIPE/checkpoints/last.ckpt"
[ -f "$CKPT" ] || { echo "gpu_train: no checkpoint at $CKPT"; exit 1; }
cp "$OUT/runs/$RECIPE/logs/metrics.csv" "$OUT/train_metrics.csv" 2>/dev/null

# the export writes into this copy of the tree's schmubert/weights/; the files come back under $OUT/weights
python3 -m schmubert.pretrained export --checkpoint "$CKPT" --name "$MODEL" --heldout "$DATA/valid.npy" \
    --overwrite ${CFG_SCALE:+--cfg-scale "$CFG_SCALE"} 2>&1 | tr '\r' '\n' | grep -v "^copy prior: " \
    | tail -n 20 | tee "$OUT/export.log"
mkdir -p "$OUT/weights" && cp schmubert/weights/"$MODEL"* "$OUT/weights/"
rm -rf "$OUT/runs"
echo "gpu_train: done"
