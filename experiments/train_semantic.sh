#!/usr/bin/env bash
# The semantic model: an ImageNet-pretrained EfficientNet-Lite0 encoder under a U-Net decoder, classification
# head, trained on all of ../shared/data/train and chosen on val/general; then its export, evaluation beside
# the previous shipped model, and timing.
#   bash experiments/train_semantic.sh            (needs pip install -r requirements-train.txt)
#   RESUME=1 bash experiments/train_semantic.sh   continue a stopped run from runs/lite0/last.pt
# On this project's 2-core CPU: about 23 minutes per epoch (13-14 images/s at 128 px, batch 16), so the
# 5 epochs take about 2 hours; the run writes last.pt every 250 steps and may be stopped and resumed at will.
# On a GPU the same command runs with device auto; raise BATCH and LR together there (e.g. 128 and 2e-3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/lite0}
OLD=${OLD:-checkpoints/colorizer.pt}
mkdir -p "$RUN"
if [ "${RESUME:-0}" = 1 ]; then
  $PY train.py --resume "$RUN/last.pt" --out "$RUN" --epochs "${EPOCHS:-5}" --no-progress
else
  $PY train.py --data "$DATA/train" --val "$DATA/val/general" --out "$RUN" --seed 0 \
      --encoder efficientnet_lite0 --encoder-lr 0.1 --loss classification --width 32 \
      --crop-size 128 --resize 144 --scale-min 0.6 --batch-size "${BATCH:-16}" --lr "${LR:-1e-3}" \
      --warmup-steps 300 --epochs "${EPOCHS:-5}" --checkpoint-every 250 --no-progress
fi
# best.pt: the lowest validation loss on val/general. Decode settings (temperature, prior correction at a
# 192-px network input) chosen on val/general too: the most accurate setting at least as colourful as v1 was
# there (60% of the originals' colourfulness; experiments/README.md, "Decode setting"). float16 storage.
$PY export_model.py --run "$RUN" --checkpoint best.pt --select "$DATA/val/general" --images 0 \
    --out "$RUN/colorizer.pt" --sizes "${SIZES:-192}" --temperatures "${TEMPERATURES:-0.55}" \
    --corrections "${CORRECTIONS:-0.25,0.35,0.40,0.45,0.50,0.55,0.70}" --min-cf "${MIN_CF:-0.60}"
$PY evaluate.py --model "$OLD" "$RUN/colorizer.pt" --fid --out runs/eval_semantic
$PY bench_inference.py --model "$OLD" "$RUN/colorizer.pt" --out runs/eval_semantic/inference-cpu.json
