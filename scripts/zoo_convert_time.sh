#!/usr/bin/env bash
# Times `edge convert` of the EfficientNet-B0-style zoo model (5.3 M parameters, 224 px, dynamic batch, NCHW,
# TensorFlow SAME padding written as explicit pads, opset 17) to tflite-fp32 with 200 unlabelled images, from an
# empty onnx2tf cache: issue 29's figure (≤ 90 s on 2 cores). Then, with ALL=1, every default format (the onnx2tf
# SavedModel now cached), for the per-format seconds of the RESULTS table.
#
#   scripts/zoo_convert_time.sh            # needs torch once, to make the model (pip install torch==2.13.0)
#   WORK=/tmp/zoo ALL=1 scripts/zoo_convert_time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EDGE=${EDGE:-.venv/bin/edge}
WORK=${WORK:-/tmp/edgekit-zoo-time}
mkdir -p "$WORK"

lscpu | grep 'Model name' || true
echo "cores: $(nproc)"

MODEL="$WORK/effnet_b0_224.onnx"
if [ ! -f "$MODEL" ]; then
    "$PY" tests/fixtures/make_zoo.py --big "$WORK" 2>&1 | grep -v -i warn
fi

PHOTOS="$WORK/photos"
if [ ! -d "$PHOTOS" ]; then   # 200 unlabelled 320x240 JPEGs, as a user's folder of photos would be
    "$PY" - "$PHOTOS" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1]); out.mkdir(parents=True)
rng = np.random.default_rng(0)
for i in range(200):
    base = rng.uniform(20, 235, 3)
    arr = base + rng.normal(0, 30, (240, 320, 3)) + np.linspace(-40, 40, 320)[None, :, None]
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out / f"photo_{i:03d}.jpg", quality=90)
EOF
fi

run() {   # label, formats, cache dir
    local start end
    start=$(date +%s.%N)
    EDGE_CACHE_DIR="$3" "$EDGE" convert "$MODEL" --labels "$WORK/effnet_b0_224.labels.txt" \
        --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --data "$PHOTOS" --formats "$2" \
        --out "$WORK/export-$1" 2>&1 | grep -v -E '^(W0000|I0000|E0000)|WARNING: All log|To enable the following'
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" -v l="$1" -v f="$2" 'BEGIN { printf "%s: edge convert --formats %s took %.1f s\n", l, f, b - a }'
}

rm -rf "$WORK/cache"
run fresh tflite-fp32 "$WORK/cache"
run cached tflite-fp32 "$WORK/cache"
if [ "${ALL:-0}" = 1 ]; then
    run all default "$WORK/cache"
fi
