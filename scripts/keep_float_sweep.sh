#!/usr/bin/env bash
# Which layers in float does a model need, and what do they cost (issue 28)? For each SET (a comma list of layers,
# as --keep-float takes them) `edge convert` makes tflite-int8 and tflite-int8-mixed with exactly those layers in
# float, validated on the whole test set (--val-samples 10000), and one `edge bench` times the two side by side
# (1 thread, batch 1). Prints, per set, the mixed artifact's top-1 agreement with Keras and its p50 over int8's.
# Usage: [FORMATS=tflite-int8,tflite-int8-mixed] [OUT=dir] scripts/keep_float_sweep.sh RUN_DIR SET [SET ...]
#   e.g. scripts/keep_float_sweep.sh runs/r8 add_5 add_5,pool add_5,pool,add_4
set -euo pipefail
cd "$(dirname "$0")/.."
py=$PWD/.venv/bin/python
run=${1:?usage: scripts/keep_float_sweep.sh RUN_DIR SET [SET ...]}
shift
[ -f "$run/model.keras" ] || { echo "$run has no model.keras"; exit 1; }
out=${OUT:-$(mktemp -d)}
formats=${FORMATS:-tflite-int8,tflite-int8-mixed}
plain=${formats%%,*}
mixed=${formats##*,}
lscpu 2>/dev/null | grep -m1 'Model name' || true
echo "cores: $(nproc); run: $run; $(git rev-parse --short HEAD)"
i=0
for set in "$@"; do
  i=$((i + 1))
  copy=$out/set$i/$(basename "$run")
  rm -rf "$copy"
  mkdir -p "$copy"
  for f in "$run"/*; do case $(basename "$f") in export|bench|checkpoints) ;; *) cp -r "$f" "$copy/" ;; esac; done
  "$py" -m edgekit convert "$copy" --formats "$formats" --val-samples 10000 --keep-float "$set" >"$out/set$i.log" 2>&1 \
    || [ $? -eq 3 ] || { echo "set $set: convert failed, see $out/set$i.log"; continue; }
  "$py" -m edgekit bench "$copy" --formats "$formats" --threads 1 --runs 300 --warmup 20 >/dev/null 2>&1 || [ $? -eq 3 ]
  "$py" - "$copy" "$set" "$plain" "$mixed" <<'PY'
import json, sys
run, kept, plain, mixed = sys.argv[1:5]
man = {e["format"]: e for e in json.load(open(f"{run}/export/manifest.json"))["artifacts"]}
rows = {r["name"]: r for r in json.load(open(f"{run}/bench/report.json"))["rows"]}
def p50(name):
    return next(x["run"]["p50_ms"] for x in rows[name]["latency"] if x.get("threads") == 1 and x.get("batch") == 1)
m = man[mixed]
print(f"{kept:40s} {len(m['mixed']['kept_out'])} layer(s): agreement {m['parity']['top1_agreement']:.2%} "
      f"(plain {man[plain]['parity']['top1_agreement']:.2%}), search {m['mixed']['search_agreement']:.2%}; "
      f"p50 {p50(mixed):.3f} / {p50(plain):.3f} ms = {p50(mixed) / p50(plain):.2f}x", flush=True)
PY
done
