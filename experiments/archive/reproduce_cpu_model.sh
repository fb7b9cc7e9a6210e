#!/usr/bin/env bash
# The CPU-only recipe (the model shipped before the GPU run): train on the CPU (80 minutes on 2 cores),
# choose its decode settings on its own held-out training images, export it in float16, and evaluate it.
#   bash experiments/archive/reproduce_cpu_model.sh          (DATA=../shared/data by default)
# It writes checkpoints/colorizer_cpu.pt, leaving the shipped checkpoints/colorizer.pt alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
$PY train.py --data "$DATA/train" --val-fraction 0.03 --out runs/cpu_w32 --loss classification \
    --crop-size 96 --epochs 16 --batch-size 32 --lr 2e-3 --width 32 --workers 2 --seed 0 \
    --checkpoint-every 500 --no-progress
$PY export_model.py --run runs/cpu_w32 --out checkpoints/colorizer_cpu.pt --images 150 \
    --temperatures 0.38,0.5,0.65 --corrections 0.15,0.25,0.35 --sizes 120,160 --min-cf 0.7
for set in val/bsds bench/kodak; do
  $PY evaluate.py --data "$DATA/$set" --model checkpoints/colorizer_cpu.pt --out "runs/eval_cpu/$(basename "$set")"
done
