#!/usr/bin/env bash
# Plain int8 against mixed int8/float side by side for a trained run (issue 28): `edge convert` to tflite-fp32,
# tflite-int8, tflite-int8-mixed, onnx-int8 and onnx-int8-mixed (FORMATS= to choose; tflite-int8-stock too) validated on the whole test
# set (--val-samples 10000), then one `edge bench` of them (1 thread, batch 1). The run is copied first (its own export/ and bench/ are left alone).
# Prints each format's top-1 agreement with Keras, top-1, p50 latency and the mixed/int8 latency ratio, and the
# layers the mixed artifact keeps in float.
# Usage: [MIN_AGREEMENT=0.995] [OUT=dir] scripts/int8_mixed.sh RUN_DIR   (needs .venv: make venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py=$PWD/.venv/bin/python
run=${1:?usage: scripts/int8_mixed.sh RUN_DIR}
[ -f "$run/model.keras" ] || { echo "$run has no model.keras"; exit 1; }
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
copy=$out/$(basename "$run")
rm -rf "$copy"
mkdir -p "$copy"
for f in "$run"/*; do case $(basename "$f") in export|bench|checkpoints) ;; *) cp -r "$f" "$copy/" ;; esac; done
lscpu 2>/dev/null | grep -m1 'Model name' || grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc); run: $run; $(git rev-parse --short HEAD)"
formats=${FORMATS:-tflite-fp32,tflite-int8,tflite-int8-mixed,onnx-int8,onnx-int8-mixed}
"$py" -m edgekit convert "$copy" --formats "$formats" --val-samples 10000 --min-agreement "${MIN_AGREEMENT:-0.995}" \
  --explain tflite-int8 || [ $? -eq 3 ]
"$py" -m edgekit bench "$copy" --formats "$formats" --threads 1 --runs 300 --warmup 20 >/dev/null || [ $? -eq 3 ]
"$py" - "$copy" <<'PY'
import json, sys
run = sys.argv[1]
man = {e["format"]: e for e in json.load(open(f"{run}/export/manifest.json"))["artifacts"]}
rows = {r["name"]: r for r in json.load(open(f"{run}/bench/report.json"))["rows"]}
p50 = {}
for name in [n for n in ("tflite-fp32", "tflite-int8-stock", "tflite-int8", "tflite-int8-mixed", "onnx-fp32", "onnx-int8",
                         "onnx-int8-mixed") if n in man]:
    e, r = man[name], rows.get(name, {})
    lat = next((x["run"]["p50_ms"] for x in r.get("latency", []) if x.get("threads") == 1 and x.get("batch") == 1), None)
    p50[name] = lat
    p = e.get("parity") or {}
    print(f"{e['symbol']} {name:18s} agreement {p.get('top1_agreement', 0):.2%}  top-1 {p.get('accuracy') or 0:.2%}  "
          f"p50 {f'{lat:.3f} ms' if lat else '(not benched)'}  {e.get('size_bytes', 0) / 1e6:.2f} MB")
for plain, mixed in (("tflite-int8", "tflite-int8-mixed"), ("onnx-int8", "onnx-int8-mixed")):
    if mixed not in man or not p50.get(mixed) or not p50.get(plain):
        continue
    m = man[mixed].get("mixed", {})
    print(f"{mixed} / {plain} p50: {p50[mixed] / p50[plain]:.2f}x; kept in float: "
          + (", ".join(f"{k['op']} {k['layer']}" for k in m.get("kept_out", [])) or "none")
          + f"; search steps: {[(s['kept_out'], round(s['agreement'], 4)) for s in m.get('steps', [])]}")
PY
