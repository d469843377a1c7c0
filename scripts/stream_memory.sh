#!/usr/bin/env bash
# Peak memory of `edge train` on a data set larger than the memory left after TensorFlow (issue 30): a MobileNetV2
# at 224 px streamed from FOLDER (default: 100,000 JPEGs at 224 px in 10 classes written by
# scripts/make_big_folder.py, 15 GB decoded), --limit-per-class unset, images through the frozen backbone
# each step (feature_cache=false), in a time budget that leaves a few hundred steps. Measured twice over the
# whole run, decoding included:
#   /usr/bin/time -v     "Maximum resident set size": the largest single process (edge train, or a decode worker)
#   a sampler            every 0.5 s, the resident memory of edge train and all its children added up (psutil)
# A cold cache (EDGE_CACHE_DIR, default a new folder under /tmp) includes the parallel decode; set CACHE to a
# filled one to measure training alone. The run directory is kept in $OUT (default a temporary folder).
# Usage: [BUDGET=10] [SIZE=224] [WEIGHTS=path|none] [CACHE=dir] [OUT=dir] scripts/stream_memory.sh [FOLDER]
#   (needs .venv: make venv; writes the folder first when it does not exist)
set -euo pipefail
cd "$(dirname "$0")/.."
py=$PWD/.venv/bin/python
folder=${1:-/tmp/edgekit-big100k}
weights=${WEIGHTS:-../shared/weights/mobilenet_v2_1.00_160_notop.h5}
[ -e "$weights" ] || weights=none
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export EDGE_CACHE_DIR=${CACHE:-$work/cache}
out=${OUT:-$work/run}
lscpu 2>/dev/null | grep -m1 'Model name' || grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc); RAM: $(free -g | awk '/Mem:/ {print $2}') GB; $(git rev-parse --short HEAD); weights: $weights"
[ -d "$folder/train" ] || "$py" scripts/make_big_folder.py "$folder" --count 100000 --size 224
echo "data: $folder ($(find "$folder" -name '*.jpg' | wc -l) JPEGs, $(du -sh "$folder" | cut -f1)); cache: $EDGE_CACHE_DIR"

/usr/bin/time -v "$py" - "$work/peak.txt" "$py" -m edgekit train --preset mobilenet_v2 --data "$folder" \
  --weights "$weights" --input-size "${SIZE:-224}" --set feature_cache=false --time-budget "${BUDGET:-10}" \
  --batch-size 64 --out "$out" >"$work/train.log" 2>"$work/time.txt" <<'PY' || { tail -30 "$work/train.log"; cat "$work/time.txt"; exit 1; }
import subprocess, sys, threading, time
import psutil
peak_file, cmd = sys.argv[1], sys.argv[2:]
proc = subprocess.Popen(cmd)
peak = [0, 0.0]
def sample():
    me = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            total = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
        except psutil.Error:
            total = 0
        if total > peak[0]:
            peak[:] = [total, time.monotonic() - started]
        time.sleep(0.5)
started = time.monotonic()
threading.Thread(target=sample, daemon=True).start()
rc = proc.wait()
open(peak_file, "w").write(f"{peak[0]} {peak[1]:.0f}\n")
sys.exit(rc)
PY
grep -E "^decoding|planned|time budget|precision|train top|done" "$work/train.log" | head -12 || true
"$py" - "$out" "$work/peak.txt" "$work/time.txt" <<'PY'
import json, re, sys
run, peak_file, time_file = sys.argv[1:4]
m = json.loads(open(f"{run}/metrics.json").read())
h = json.loads(open(f"{run}/history.json").read())
total, at = open(peak_file).read().split()
t = open(time_file).read()
maxrss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", t).group(1)
print(f"trained {m.get('train_seconds', 0):.0f} s at {m['train_images_per_second']:.1f} images/s "
      f"({m['train_seconds'] * m['train_images_per_second'] / 64:.0f} steps of 64); test top-1 {m['test']['top1']:.2%} "
      f"on {m['test']['images']:,} images; {m['data_seconds']:.0f} s reading data (cache hit: {m['data_cache_hit']})")
print(f"peak RSS, largest process (/usr/bin/time -v): {maxrss / 1024 / 1024:.2f} GB")
print(f"peak RSS, edge train and its children added up: {int(total) / 2**30:.2f} GB ({at} s into the run); wall {wall}")
PY
