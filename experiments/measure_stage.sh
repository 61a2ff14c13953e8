#!/usr/bin/env bash
# A training stage measured against the model it would replace, as experiments/README.md reports the shipped
# models' stages (on the CPU, one run each, the same seeds and masks for both):
#   - the network alone: held-out ELBO, infilling NLL of bars 16:48, ELBO on 48 training windows (16 masks each);
#   - bench_decoding.py with the CLI's defaults, seeds 0 and 1: the statistics overlap against the training
#     windows, notes per bar, the riff copy (its copy prior: measure an export, whose prior is fitted);
#   - bench_control.py: the asked key (the key alone, guidance 1.5 and 2, 6 keys x 8 samples).
#
#   python -m schmubert.pretrained export --checkpoint runs/RUN/checkpoints/last.ckpt --name melody \
#       --heldout data/processed/lakh-melody/valid.npy --directory runs/candidates/RUN
#   bash experiments/measure_stage.sh runs/candidates/RUN/melody.safetensors [BASELINE]
#
# MODEL (melody or trio; default melody) names the dataset (data/processed/lakh-MODEL, or DATA) and the default
# BASELINE, pretrained:MODEL. ONLY=candidate skips the baseline. Everything printed is also in OUT (default
# runs/measure)/{baseline,candidate}.log. For the melody on 2 AVX2 cores (fp32): a few minutes for the ELBOs, 9.5
# to 15 per seed of bench_decoding (64 samples at 8.9-13.9 s each); on 2 AVX512-BF16 cores (bf16) about 4 per
# seed (3.3-4.0 s each) and 7-9 for bench_control (96 samples at 4.2-5.4 s); run nothing else meanwhile.
set -euo pipefail
CANDIDATE=${1:?usage: measure_stage.sh CANDIDATE [BASELINE]}
MODEL=${MODEL:-melody}
BASELINE=${2:-pretrained:$MODEL}
DATA=${DATA:-data/processed/lakh-$MODEL}
OUT=${OUT:-runs/measure}
ONLY=${ONLY:-baseline candidate}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

measure() {  # CHECKPOINT
    local elbo=(python -m schmubert.evaluate elbo --checkpoint "$1" --no-copy-prior --no-progress
                --samples-per-piece 16)
    echo "network alone, held-out ELBO / infilling 16:48 / 48 training windows (bits per element):"
    "${elbo[@]}" --data "$DATA/valid.npy"
    "${elbo[@]}" --data "$DATA/valid.npy" --infill 16:48
    "${elbo[@]}" --data "$DATA/train.npy" --max-pieces 48
    for seed in 0 1; do
        python experiments/bench_decoding.py --checkpoint "$1" --data "$DATA/valid.npy" \
            --reference "$DATA/train.npy" --settings default --seed "$seed"
    done
    python experiments/bench_control.py --checkpoint "$1" --scales 1.5,2 --samples 8 --density "" --register "" \
        --held-out "$DATA/valid.npy"
}

for which in $ONLY; do
    checkpoint=$BASELINE
    [ "$which" = candidate ] && checkpoint=$CANDIDATE
    echo "== $which: $checkpoint" | tee "$OUT/$which.log"
    measure "$checkpoint" 2>&1 | grep --line-buffered -v "Warning\|warn(" | tee -a "$OUT/$which.log"
done
