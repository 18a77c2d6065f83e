#!/usr/bin/env bash
# Every number in docs/results.md, from nothing: data, the three trainings, Table 1, the
# per-factor table, Table 2 and the real-scan (tooth) table and figure.
# About 2 hours on 2 CPU cores: the three trainings run side by side with one thread each.
#   bash scripts/reproduce_results.sh            (DATA=data RUNS=runs OUT=results by default)
set -euo pipefail
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
OUT=${OUT:-results}
FACTORS="2 4 10 20 40 80 120"
mkdir -p "$RUNS" "$OUT"

# 1. 36 training scans (six families, random detectors) + 12 held-out scans -> pairs files
python scripts/make_training_data.py --out-path "$DATA"

# 2. configs/cpu.toml: the paper's recipe (65 epochs, Adam 3e-4 / eps 1e-7, x0.95 every 10
#    epochs, MSE, bf16 autocast), 128 px crops of 448 training slices
train() {
    tomodl train configs/cpu.toml --set "data=[\"$DATA/$2.h5\"]" --set "arch=$3" \
        --set threads=1 --out-path "$RUNS/$1" --no-progress > "$RUNS/$1.log" 2>&1
}
train resattunet-x20 pairs_x20 resattunet &
train unet-x20 pairs_x20 unet &
train resattunet-mixed pairs_mixed resattunet &
wait

MODELS=(--model "UNet=$RUNS/unet-x20/best" --model "ResAttUnet=$RUNS/resattunet-x20/best")
ALL=("${MODELS[@]}" --model "ResAttUnet-mixed=$RUNS/resattunet-mixed/best")

# 3. Table 1 (train / val / test phantoms of the training file, both protocols) + Fig. 6
tomodl evaluate "$DATA/pairs_x20.h5" "${MODELS[@]}" --out-path "$OUT/table1"
# 4. held-out phantoms at every sparse factor -> one table
for k in $FACTORS; do
    tomodl evaluate "$DATA/heldout_x$k.h5" "${ALL[@]}" --out-path "$OUT/heldout_x$k"
done
python scripts/factor_table.py $(for k in $FACTORS; do echo "$OUT/heldout_x$k"; done) \
    --pairs $(for k in $FACTORS; do echo "$DATA/heldout_x$k.h5"; done) --out-path "$OUT/factors.md"
# 5. Table 2: fp32 vs amp training steps, each in a fresh process
tomodl evaluate --profile-precision --profile-size 128 --profile-batch 4 --out-path "$OUT/table2"
# 6. the real tooth scan at every 4th, 10th and 20th angle against its full-angle FBP
python scripts/eval_real.py "${ALL[@]}" --factors 4 10 20 --out-path "$OUT/tooth"
