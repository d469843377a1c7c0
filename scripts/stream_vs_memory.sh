#!/usr/bin/env bash
# CIFAR-10 resnet8 recipe for a fixed number of epochs (no time budget, the same seed) twice, side by side
# (issue 30): reading every batch from the memory-mapped decoded cache, as `edge train` does, and from the
# whole splits copied into arrays in memory first (tests/fixtures/record_reads.py "memory", the path before the
# cache was mapped). Prints each run's training rate, test top-1 and peak RSS, and the ratios. The cache is
# filled first, so neither run decodes.
# Usage: [EPOCHS=4] [ORDER="mapped memory"] scripts/stream_vs_memory.sh   (needs .venv: make venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py=$PWD/.venv/bin/python
data=${EDGE_CIFAR10:-../shared/datasets/cifar10-jpeg.tar.gz}
[ -f "$data" ] || { echo "no CIFAR-10 archive at $data (set EDGE_CIFAR10)"; exit 1; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
export EDGE_CACHE_DIR=$out/cache
lscpu 2>/dev/null | grep -m1 'Model name' || grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc); data: $data; epochs: ${EPOCHS:=4}; $(git rev-parse --short HEAD)"
"$py" -c "from edgekit.train.data import load_dataset; load_dataset('$data', (32, 32))"

for mode in ${ORDER:-mapped memory}; do
  /usr/bin/time -v "$py" tests/fixtures/record_reads.py /dev/null "$mode" train -c resnet8 --data "$data" \
    --out "$out/$mode" --time-budget 0 --epochs "$EPOCHS" >"$out/$mode.log" 2>&1 \
    || { echo "$mode failed:"; tail -20 "$out/$mode.log"; exit 1; }
  "$py" - "$out/$mode" "$mode" "$(grep 'Maximum resident' "$out/$mode.log" | awk '{print $NF}')" <<'PY'
import json, sys
run, mode, rss_kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.loads(open(f"{run}/metrics.json").read())
print(f"{mode:7s} training {m['train_images_per_second']:7.1f} images/s   test top-1 {m['test']['top1']:.2%}   "
      f"train {m['train_seconds']:.0f} s   peak RSS {rss_kb / 1024:.0f} MB   precision {m.get('precision', '?')}")
with open(f"{run}/../summary.txt", "a") as f:
    f.write(f"{mode} {m['train_images_per_second']} {m['test']['top1']}\n")
PY
done
"$py" - "$out/summary.txt" <<'PY'
import sys
rows = {mode: (float(rate), float(top1)) for mode, rate, top1 in (l.split() for l in open(sys.argv[1]))}
(rm, tm), (rr, tr) = rows["mapped"], rows["memory"]
print(f"mapped / memory: training rate {rm / rr:.3f}x   test top-1 {100 * (tm - tr):+.2f} pt")
PY
