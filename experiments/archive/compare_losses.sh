#!/usr/bin/env bash
# Compare the training losses at equal compute (same model, crop, batch and number of steps), then
# evaluate each on val/bsds and bench/kodak with evaluate.py. Writes runs/compare/<loss>/ and
# experiments/results/compare_<loss>_<set>.json; prints the table at the end.
#   bash experiments/archive/compare_losses.sh [EPOCHS] [WIDTH] [CROP]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
EPOCHS=${1:-6}; WIDTH=${2:-16}; CROP=${3:-64}
DATA=${DATA:-../shared/data}
mkdir -p experiments/results
for loss in mse l1 huber classification; do
  run=runs/compare/$loss
  $PY train.py --data "$DATA/train" --val-fraction 0.03 --out "$run" --loss "$loss" --width "$WIDTH" \
      --crop-size "$CROP" --batch-size 32 --epochs "$EPOCHS" --seed 0 --no-progress \
      --checkpoint-every 0
  # Classification models are decoded with the paper's setting (annealed mean, T = 0.38, no correction).
  for set in val/bsds bench/kodak; do
    name=$(basename "$set")
    $PY evaluate.py --data "$DATA/$set" --model "$run/last.pt" --out "runs/compare/$loss/eval_$name" \
        --temperature 0.38 --prior-correction 0
    cp "runs/compare/$loss/eval_$name/summary.json" "experiments/results/compare_${loss}_${name}.json"
  done
done
$PY experiments/archive/table.py experiments/results/compare_*.json
