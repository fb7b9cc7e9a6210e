#!/usr/bin/env bash
# Reproduce v1, the model shipped until 2026-11-29 (now the semantic model, experiments/train_semantic.sh): 80 epochs on one GPU (2 min 37 s of training on an H200), its best.pt and
# last.pt as a two-network ensemble, decode settings chosen on the BSDS photos of the training folder,
# int8 export, then the evaluation.
#   bash experiments/archive/reproduce_shipped.sh          (DATA=../shared/data by default)
# The shipped run read a packed copy of the training photos (144 px squares stored as WebP, made by
# experiments/pack_data.py so that they could be carried to the GPU machine); PACKED=1 does the same. Without
# it the run reads the original files, which differ from the packed ones by the WebP error (about 35 dB).
# On a CPU the same command works, but takes about 100 times longer.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
TRAIN=$DATA/train
if [ "${PACKED:-0}" = 1 ]; then
  $PY -m experiments.pack_data "$TRAIN" .gpudata/train --size 144 --quality 80
  TRAIN=.gpudata/train
fi
$PY train.py --data "$TRAIN" --val-fraction 0.03 --seed 0 --out runs/gpu80 --loss classification \
    --crop-size 128 --resize 144 --scale-min 0.6 --batch-size 128 --lr 2e-3 --warmup-steps 500 \
    --width 48 --depth 4 --epochs 80 --val-every 3 --checkpoint-every 0 --workers 16 --no-progress
# best.pt (lowest validation loss: epoch 45 in the shipped run) and last.pt (epoch 80), their colours
# averaged; decode settings chosen on the 200 BSDS training photos, the only general photos among the
# training images (see experiments/README.md, v1).
$PY export_model.py --run runs/gpu80 --checkpoint best.pt --members runs/gpu80/last.pt --int8 \
    --select "$DATA/train/bsds" --images 0 --out runs/gpu80/colorizer.pt \
    --temperatures 0.5,0.75,1.0 --corrections 0.6,0.7,0.8 --sizes 128 --min-cf 0.7
for set in val/bsds bench/kodak; do
  $PY evaluate.py --data "$DATA/$set" --model runs/gpu80/colorizer.pt --out "runs/eval/$(basename "$set")"
done
