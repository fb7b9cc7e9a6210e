#!/usr/bin/env bash
# A mixed loss on the shipped classification model: one epoch from it with the classification loss plus
# --mse-weight x the MSE of its distribution's mean, against the control of experiments/train_hints.sh (the
# same epoch, seed, crops and schedule, classification loss alone; its numbers are in
# experiments/results/hints/). The weight is where the two terms pull equally hard at the start
# (python -m experiments.archive.mixed_loss_balance: 37.8, rounded to 40). Then v2's decode rule and issue 11's measures.
#   bash experiments/archive/mixed_loss.sh        (needs pip install -r requirements-train.txt)
# On this project's 2-core CPU: about 30 minutes of training (14 images/s), 5 of export, 12 of evaluation.
# Resume a stopped run with: python train.py --resume runs/mixed/last.pt --out runs/mixed
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/mixed}
OLD=${OLD:-checkpoints/colorizer.pt}
mkdir -p "$RUN"
$PY train.py --data "$DATA/train" --val "$DATA/val/general" --out "$RUN" --seed 0 --init "$OLD" \
    --encoder efficientnet_lite0 --encoder-lr 0.1 --loss classification --mse-weight "${MSE_WEIGHT:-40}" \
    --width 32 --crop-size 128 --resize 144 --scale-min 0.6 --batch-size 16 --lr 3e-4 --warmup-steps 100 \
    --epochs 1 --checkpoint-every 200 --no-progress
# v2's rule (experiments/train_semantic.sh): the most accurate setting at least 60% as colourful as the originals.
$PY export_model.py --run "$RUN" --checkpoint best.pt --select "$DATA/val/general" --images 0 \
    --out "$RUN/colorizer.pt" --sizes 192 --temperatures 0.55 \
    --corrections 0.25,0.35,0.40,0.45,0.50,0.55,0.70 --min-cf 0.60
$PY evaluate.py --model "$OLD" "$RUN/colorizer.pt" --fid --out "$RUN/eval"
