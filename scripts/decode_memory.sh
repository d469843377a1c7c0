#!/usr/bin/env bash
# Peak memory of `edge-run predict` on images far larger than the model needs (issue 26, row 8): a 13000x13000
# PNG of ~30 kB (1-bit, a decompression bomb under Pillow's 180-megapixel cap) and a 6000x4000 JPEG photo, plus
# a progressive JPEG and an RGB PNG of those sizes. Each runs in its own process under /usr/bin/time -v (or, without
# it, a Python wrapper reading getrusage(RUSAGE_CHILDREN)); the model is runtime/tests/data's 16x16 tflite-int8.
# With BEFORE=REV (e.g. BEFORE=HEAD) the runtime of that git revision runs the same images too (git archive into
# the temp dir; the working tree is not touched).
# The runtime measured is the working tree's (PYTHONPATH=runtime/src), run by .venv-runtime's Python.
# Usage: [BEFORE=REV] scripts/decode_memory.sh [EDGE_RUN_ARGS...]   (needs .venv-runtime: make .venv-runtime/.installed)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv-runtime/bin/python}
model=runtime/tests/data/model_tflite-int8.tflite
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
lscpu 2>/dev/null | grep -m1 'Model name' || grep -m1 "model name" /proc/cpuinfo || true
echo "python: $py; model: $model; extra args: ${*:-none}"

"$py" - "$out" <<'PY'
import struct, sys, zlib
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1])

def png(path, side, colour_type, bits, row):
    """A PNG written row by row: no side x side buffer in this process."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(b"\0" + row(y)) for y in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, bits, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))

side = 13000
stride = (side + 7) // 8
black, square = bytes(stride), bytes(stride // 4) + b"\xff" * (stride // 2) + bytes(stride - stride // 4 - stride // 2)
png(out / "bomb_13000x13000_1bit.png", side, 0, 1, lambda y: square if side // 4 <= y < 3 * side // 4 else black)
red, green = bytes([200, 40, 40]) * side, bytes([40, 180, 60]) * side
png(out / "bomb_13000x13000_rgb.png", side, 2, 8, lambda y: red if y < side // 2 else green)
y, x = np.mgrid[0:4000, 0:6000]
photo = np.stack([x * 255 // 6000, y * 255 // 4000, (x + y) * 255 // 10000], -1)
photo = np.clip(photo + np.random.default_rng(0).integers(-20, 21, photo.shape), 0, 255).astype(np.uint8)
Image.fromarray(photo).save(out / "photo_6000x4000.jpg", quality=90)
Image.fromarray(photo).save(out / "photo_6000x4000_progressive.jpg", quality=90, progressive=True)
PY

if [ -n "${BEFORE:-}" ]; then
  mkdir -p "$out/before"
  # runtime/src/edgekit_runtime since the src layout; runtime/edgekit_runtime before it
  git archive "$BEFORE" runtime/src/edgekit_runtime 2>/dev/null | tar -x -C "$out/before" 2>/dev/null ||
    git archive "$BEFORE" runtime/edgekit_runtime | tar -x -C "$out/before"
  before_path="$out/before/runtime"; [ -d "$before_path/src" ] && before_path="$before_path/src"
fi

measure() {  # label, PYTHONPATH holding the runtime to measure, edge-run args...
  local label=$1 path=$2 code res; shift 2
  export OUT_STDOUT="$out/stdout" OUT_STDERR="$out/stderr"
  set +e
  if [ -x /usr/bin/time ]; then
    PYTHONPATH="$path" /usr/bin/time -v -o "$out/time.log" "$py" -m edgekit_runtime "$@" >"$OUT_STDOUT" 2>"$OUT_STDERR"
    code=$?
    res=$(awk -F': ' '/Maximum resident set size/ {kb=$2} /Elapsed \(wall clock\)/ {w=$2}
                      END {printf "%7.1f MB  %s", kb/1024, w}' "$out/time.log")
  else
    res=$(PYTHONPATH="$path" "$py" -c '
import os, resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "edgekit_runtime"] + sys.argv[1:],
                       stdout=open(os.environ["OUT_STDOUT"], "w"), stderr=open(os.environ["OUT_STDERR"], "w"))
kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{kb / 1024:7.1f} MB  {time.perf_counter() - t:.2f} s")
sys.exit(code)' "$@")
    code=$?
  fi
  set -e
  local said size=""
  said=$(cat "$OUT_STDOUT" "$OUT_STDERR" | grep -v '^INFO: ' | head -1 | sed "s|$out/||")
  [ -n "${3:-}" ] && [ -f "$3" ] && size=$(wc -c <"$3" | tr -d " ")B
  printf '%-46s %9s  peak RSS %s  exit %s  %s\n' "$label" "$size" "$res" "$code" "$said"
}

for image in bomb_13000x13000_1bit.png bomb_13000x13000_rgb.png photo_6000x4000.jpg photo_6000x4000_progressive.jpg; do
  measure "$image" runtime/src predict "$model" "$out/$image" "$@"
  if [ -n "${BEFORE:-}" ]; then
    measure "  $image (runtime of $BEFORE)" "$before_path" predict "$model" "$out/$image"
  fi
done
measure "bomb_13000x13000_1bit.png --max-memory 120" runtime \
  predict "$model" "$out/bomb_13000x13000_1bit.png" --max-memory 120
measure "baseline: edge-run info (no image)" runtime info "$model"
