#!/usr/bin/env bash
# More photos (issue 28): one control-length fine-tune of the shipped model v2 on photos it never saw, against the
# control of experiments/train_hints.sh (the same recipe, steps and seed on ../shared/data/train; its numbers in
# experiments/results/hints/). DATA_NEW: a folder of 21,000 photos drawn with seed 0 from the folder that
# `python -m experiments.more_photos` builds (faces, rooms, pets, objects, flowers, houses); make it with
#   python -m experiments.sample_folder /work/more_photos 21000 /work/train_new   (or any folder of colour photos)
#   bash experiments/train_more_photos.sh      (needs pip install -r requirements-train.txt)
# The second run: the new photos beside train/ (a folder holding links to both), one epoch of the two:
#   DATA_NEW=/work/train_union RUN=runs/union STEPS=2620 bash experiments/train_more_photos.sh
# The third: a second epoch from the second run's network, on train/ and 21,000 new photos neither run saw:
#   python -m experiments.sample_folder /work/more_photos 21000 /work/train_new2 --seed 1 --exclude /work/train_new
#   (a folder /work/train_union2 holding links to train/ and /work/train_new2)
#   DATA_NEW=/work/train_union2 RUN=runs/union2 STEPS=2620 INIT=experiments/results/more_photos/union/colorizer.pt \
#     COMPARE=experiments/results/more_photos/union/colorizer.pt bash experiments/train_more_photos.sh
# On this project's 2-core CPU, one thread: 16 images/s on 2026-12-06, so the 1,310 steps of 16 took 22 minutes;
# last.pt every 200 steps; resume a stopped run with
#   python train.py --resume runs/more/last.pt --out runs/more --threads 1 --workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
DATA_NEW=${DATA_NEW:-/work/train_new}
RUN=${RUN:-runs/more}
STEPS=${STEPS:-1310}  # the control's one epoch of train/; 2620: one epoch of train/ and the 21,000 new photos
OLD=${OLD:-checkpoints/colorizer.pt}  # the shipped model: the baseline of the evaluation
INIT=${INIT:-$OLD}                    # the weights to start from
COMPARE=${COMPARE:-}                  # further models to evaluate in the same run
mkdir -p "$RUN"
$PY train.py --data "$DATA_NEW" --val "$DATA/val/general" --out "$RUN" --seed 0 --init "$INIT" \
    --encoder efficientnet_lite0 --encoder-lr 0.1 --loss classification --width 32 \
    --crop-size 128 --resize 144 --scale-min 0.6 --batch-size 16 --lr 3e-4 --warmup-steps 100 \
    --epochs 1 --max-steps "$STEPS" --checkpoint-every 200 --threads 1 --workers 1 --cache-dir "" --no-progress
# v2's rule (experiments/train_semantic.sh): the most accurate setting at least 60% as colourful as the originals.
$PY export_model.py --run "$RUN" --checkpoint best.pt --select "$DATA/val/general" --images 0 \
    --out "$RUN/colorizer.pt" --sizes 192 --temperatures 0.55 --corrections 0.35,0.45,0.55 --min-cf 0.60
$PY evaluate.py --model "$OLD" $COMPARE "$RUN/colorizer.pt" --fid --out "$RUN/eval"
