#!/usr/bin/env bash
# Training images/s of a config (default resnet8: 3 epochs on 1,000 images per class, no time
# budget, its recipe otherwise) with TensorFlow's own default and with edgekit's choice (src/edgekit/hardware.py),
# on this CPU and on this CPU standing in for an AVX2-only one (EDGE_CPU=avx2). One run each, side by side.
# Usage: scripts/cpu_throughput.sh [CONFIG]   (needs .venv: make venv; $EDGE_CIFAR10 or network for cifar10)
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=${1:-resnet8}
py=.venv/bin/python
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
# what TensorFlow alone does on this CPU (and on an AVX2-only one: oneDNN off)
tf_native=$($py -c "from edgekit import hardware; print(int(hardware.detect(environ={}).tf_enables_onednn))")
grep -m1 "model name" /proc/cpuinfo || true
run() {
  local label=$1; shift
  env "$@" .venv/bin/edge train -c "$cfg" --epochs 3 --time-budget 0 --limit-per-class 1000 --out "$out/$label" \
    >"$out/$label.log" 2>&1 || { echo "$label failed:"; tail -3 "$out/$label.log"; return 1; }
  $py - "$out/$label" "$label" <<'PY'
import json, sys
run, label = sys.argv[1], sys.argv[2]
m = json.load(open(f"{run}/metrics.json")); hw = json.load(open(f"{run}/run.json"))["hardware"]
print(f"{label:<26} {m['train_images_per_second']:>7,.0f} images/s  {hw['cpu_class']:<4} precision {m['precision']:<8} "
      f"oneDNN {'on ' if hw['onednn_in_tensorflow'] else 'off'} (chosen by {hw['chosen_by']})")
PY
}
run native-tensorflow TF_ENABLE_ONEDNN_OPTS=$tf_native
run native-edgekit X=1
run avx2-tensorflow EDGE_CPU=avx2 TF_ENABLE_ONEDNN_OPTS=0
run avx2-edgekit EDGE_CPU=avx2
