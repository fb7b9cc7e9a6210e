#!/usr/bin/env bash
# The 6-epoch MSE recipe trained without 300 landscapes, and its decode chosen on val/general and on those
# landscapes together (experiments/README.md, "Choosing the decode on held-out landscapes too").
#   bash experiments/holdout_selection.sh            (needs pip install -r requirements-train.txt)
#   RESUME=1 bash experiments/holdout_selection.sh   continue a stopped run from $RUN/last.pt
#   ENCODER=efficientnet_lite1 RUN=runs/lite1_holdout GAINS=1.0,1.1,1.2,1.3,1.4,1.5,1.6 EVENNESS=0 \
#       bash experiments/holdout_selection.sh         the Lite1 run (99 minutes for the 6 epochs here)
# On this project's 2-core CPU: about 14.5 minutes an epoch (24 images/s), 88 minutes for the 6 epochs;
# last.pt is written every 500 steps. Then about 15 minutes for the grid and 10 for the evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/mse_holdout}
ENCODER=${ENCODER:-efficientnet_lite0}
GAINS=${GAINS:-0.8,0.9,1.0,1.1,1.2,1.3,1.4}
EVENNESS=${EVENNESS:-0,0.3,0.6}
LIST=experiments/results/holdout/select.txt
# The 300 photos (150 of train/landscape, 25 of each class of train/scenes; seed 0); the list is committed,
# and this re-draws the same one and links the photos into runs/holdout/select.
$PY experiments/holdout.py --data "$DATA/train" --list "$LIST" --link runs/holdout/select
if [ "${RESUME:-0}" = 1 ]; then
  $PY train.py --resume "$RUN/last.pt" --out "$RUN" --no-progress
else
  $PY train.py --data "$DATA/train" --val "$DATA/val/general" --exclude "$LIST" --out "$RUN" --seed 0 \
      --encoder "$ENCODER" --encoder-lr 0.1 --loss mse --epochs 6 --batch-size 16 \
      --crop-size 128 --resize 144 --scale-min 0.6 --lr 1e-3 --warmup-steps 300 --no-progress
fi
# Thresholds: v2's own colourfulness shares on the two folders (0.6438 on val/general; 0.7855 on the
# landscapes, results/holdout/v2_on_holdout.json). The rule takes the highest PSNR gain averaged over both.
$PY export_model.py --run "$RUN" --checkpoint last.pt --select "$DATA/val/general" runs/holdout/select \
    --min-cf 0.6438 0.7855 --sizes 192 --gains "$GAINS" --evenness "$EVENNESS" \
    --out "$RUN/colorizer.pt"
$PY evaluate.py --model "$RUN/colorizer.pt" --fid --out "$RUN/eval"
