#!/usr/bin/env bash
# The size of a fresh environment made from requirements.txt alone (what colorizing photos and films needs;
# target: at most 400 MB), and how long its imports take. Needs network access to the package index.
#   bash experiments/env_size.sh [python3]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
ENV=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$ENV")"' EXIT
"$PY" -m venv "$ENV"
"$ENV/bin/pip" install -q --no-cache-dir -r requirements.txt
echo "python: $("$ENV/bin/python" --version 2>&1)"
echo "environment, all of it: $(du -sm "$ENV" | cut -f1) MB"
echo "site-packages by package (MB):"
du -sm "$ENV"/lib/python*/site-packages/* | sort -rn | head -12
"$ENV/bin/python" -c "import torch" 2>/dev/null && echo "torch is installed (it should not be)" || echo "torch: not installed"
"$ENV/bin/python" - <<'PY'
import time
t = time.perf_counter()
import numpy, onnxruntime, PIL.Image  # noqa: E401,F401
print(f"import numpy, onnxruntime, PIL: {time.perf_counter() - t:.2f} s")
PY
# The CLI itself runs in it: the sample photo with the shipped ONNX model.
OUT=$(dirname "$ENV")/out.png
"$ENV/bin/python" predict_color.py -image data/sample_grey.jpg -output "$OUT" && echo "colorized the sample: ok"
