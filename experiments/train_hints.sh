#!/usr/bin/env bash
# Colour hints: fine-tune the automatic semantic model (runs/lite0/best.pt, from train_semantic.sh) into a
# hint model with simulated users, and, as the control, the same fine-tune without hints; export both with
# the same decode rule, then score them beside the model they started from.
#   bash experiments/train_hints.sh        (needs pip install -r requirements-train.txt)
# On this project's 2-core CPU the two runs go side by side, one thread each: about 6.5 images/s each at
# 128 px (less while other work shares the cores), so the one epoch takes about an hour. The runs write
# last.pt every 200 steps; resume a stopped one with
#   python train.py --resume runs/hints/last.pt --out runs/hints --threads 1 --workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
INIT=${INIT:-runs/lite0/best.pt}
OLD=${OLD:-checkpoints/colorizer.pt}
for RUN in hints nohints; do
  mkdir -p runs/$RUN
  EXTRA=""; [ $RUN = hints ] && EXTRA="--hints"
  $PY train.py --data "$DATA/train" --val "$DATA/val/general" --out runs/$RUN --seed 0 --init "$INIT" $EXTRA \
      --encoder efficientnet_lite0 --encoder-lr 0.1 --loss classification --width 32 \
      --crop-size 128 --resize 144 --scale-min 0.6 --batch-size 16 --lr 3e-4 --warmup-steps 100 \
      --epochs 1 --checkpoint-every 200 --threads 1 --workers 1 --no-progress > runs/$RUN/train.log 2>&1 &
done
wait
# The decode of both: the most accurate setting on val/general with at least 60% of the originals'
# colourfulness (the rule that chose the automatic model's), at its network size of 192 px.
for RUN in hints nohints; do
  $PY export_model.py --run runs/$RUN --checkpoint best.pt --select "$DATA/val/general" --images 0 \
      --out runs/$RUN/colorizer.pt --sizes 192 --temperatures 0.55 --corrections 0.35,0.45,0.55 --min-cf 0.6 \
      > runs/$RUN/export.log
done
# Automatic colour (issue 11's measures) for all three; then simulated users: the hint model's network alone, the
# hint model with propagation, and the shipped model (OLD) with propagation; the figure; the propagation grid.
$PY evaluate.py --model "$OLD" runs/nohints/colorizer.pt runs/hints/colorizer.pt --fid --out runs/eval_hints/auto
$PY evaluate.py --model runs/hints/colorizer.pt --hints 0 1 5 10 50 --no-propagation --out runs/eval_hints/hints
$PY evaluate.py --model runs/hints/colorizer.pt --hints 0 1 5 10 50 --out runs/eval_hints/prop
$PY evaluate.py --model "$OLD" --hints 0 1 5 10 50 --out runs/eval_hints/v2prop
$PY -m experiments.hint_figure --model "$OLD" --hints 5 --out experiments/results/hints/hints.png  # with the shipped model: OLD
$PY -m experiments.hint_propagation_grid --model runs/hints/colorizer.pt
