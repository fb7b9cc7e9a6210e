#!/usr/bin/env bash
# The shipped model's training run on one GPU: size the run to a time budget from a measured throughput,
# train, and leave a slim (float16, no optimizer) copy of best.pt with the run's logs in $RESULTS.
#   DATA=.gpudata/train BUDGET=400 RESULTS=out bash experiments/archive/train_gpu.sh
# DATA is any folder of colour photos; experiments/pack_data.py makes the small copy that was carried to
# the GPU (.gpudata/train.tgz is unpacked when DATA is absent). Then, on any machine, export_model.py
# chooses the decode settings of $RESULTS/best_fp16.pt, as in experiments/archive/reproduce_shipped.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DATA=${DATA:-/tmp/gpudata/train}
BUDGET=${BUDGET:-400}            # seconds of training steps (sets the epochs unless EPOCHS is given)
RESULTS=${RESULTS:-runs/gpu_results}
RUN=${RUN:-/tmp/gpu_run}
# EXTRA: more train.py options, appended (a later option wins), e.g. a tiny model for a dry run on a CPU.
mkdir -p "$RESULTS"
if [ ! -d "$DATA" ]; then mkdir -p "$(dirname "$DATA")"; tar -xzf .gpudata/train.tgz -C "$(dirname "$DATA")"; fi
nvidia-smi -L || true
# The model's training settings; bench.py measures exactly this configuration.
ARGS=(--crop-size 128 --batch-size 128 --width 48 --depth 4 --loss classification)
if [ -z "${EPOCHS:-}" ]; then
# Issue 4's figure at bench.py's CPU settings, then the throughput of this run's own settings.
$PY bench.py --data "$DATA" --device cuda --crop-size 128 --batch-size 32 --width 32 --loss mse \
    --seconds 1 --repeats 3 --out "$RESULTS/bench-cuda.json" --note "bench.py defaults on the GPU" || true
$PY bench.py --data "$DATA" --device cuda "${ARGS[@]}" --seconds 1 --repeats 3 \
    --out "$RESULTS/bench-cuda-run.json" --note "the shipped model's training settings" || true
N=$(find "$DATA" -type f | wc -l)
EPOCHS=$($PY - "$RESULTS/bench-cuda-run.json" "$BUDGET" "$N" <<'PYEOF'
import json, sys
try:
    ips = json.load(open(sys.argv[1]))["results"]["train"]["images_per_s"]
except (OSError, KeyError, ValueError):
    ips = 3000.0  # no measurement: a guess; the timeout below still bounds the run
print(max(1, int(float(sys.argv[2]) * ips / (0.97 * int(sys.argv[3])))))
PYEOF
)
fi  # EPOCHS given: no benchmark, no sizing
VAL_EVERY=$(( EPOCHS / 25 > 1 ? EPOCHS / 25 : 1 ))
echo "training $EPOCHS epochs (validation every $VAL_EVERY) in a budget of $BUDGET s"
set +e
PYTHONUNBUFFERED=1 timeout $(( BUDGET + 120 )) $PY train.py --data "$DATA" --val-fraction 0.03 --seed 0 \
    --out "$RUN" "${ARGS[@]}" --resize 144 --scale-min 0.6 --lr 2e-3 --warmup-steps 500 \
    --epochs "$EPOCHS" --val-every "$VAL_EVERY" --checkpoint-every 0 --workers 16 --cache-dir /tmp/cache \
    --no-progress ${EXTRA:-} 2>&1 | tee "$RESULTS/train.log"
echo "train.py exit status ${PIPESTATUS[0]}"
set -e
$PY -m experiments.collect_run "$RUN" "$RESULTS" ${KEEP:-best.pt}
