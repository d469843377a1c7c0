#!/usr/bin/env bash
# edgekit as a user who runs `pip install` gets it, with no checkout in sight: build the sdists of edgekit and
# edgekit-runtime, build both wheels from those sdists (so an incomplete sdist fails here), install the wheels
# (not editable) into a fresh venv in a folder outside the clone, and there run
#   edge configs → edge train -c demo → edge convert → edge bench → edge select → edge pack --wheels (offline)
# and install the bundle. Exit 0 when every step did (convert and bench may exit 3: an artifact outside its
# tolerance is a result, not a failure of the flow).
# Usage: scripts/installed_flow.sh   (`make test-installed`; needs .venv, whose wheelhouse/ holds this machine's
# device-side wheels, and the pip cache or a package registry for TensorFlow and the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=$repo/${VENV:-.venv}/bin/python
constraints=$repo/src/edgekit/constraints.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/edgekit-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT
export EDGE_CACHE_DIR=$work/cache   # nothing left in the user's cache
unset PYTHONPATH
step() { printf '\n== %s\n' "$*" >&2; }

step "sdists, then wheels built from them"
for project in "$repo" "$repo/runtime"; do
  # setuptools' PEP 517 backend called directly (what `python -m build --no-isolation` does), from a copy so that
  # no egg-info or build/ is left in the working tree
  copy=$work/src-$(basename "$project")
  mkdir -p "$copy"
  (cd "$project" && git ls-files -z . | grep -zv '^runtime/' | xargs -0 cp --parents -t "$copy")
  (cd "$copy" && "$py" -c "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))" "$work/sdist") >/dev/null
done
ls "$work/sdist"
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$work/dist" "$work"/sdist/*.tar.gz
ls "$work/dist"

step "a fresh venv outside the clone, the wheels installed (not editable)"
${PYTHON:-python3} -m venv "$work/venv"
bin=$work/venv/bin
"$bin/pip" install --quiet --disable-pip-version-check -c "$constraints" \
  "$(ls "$work"/dist/edgekit_runtime-*.whl)[litert,onnx]" "$(ls "$work"/dist/edgekit-*.whl)"
cd "$work"
where=$("$bin/python" -c "import edgekit, edgekit_runtime; print(edgekit.__file__, edgekit_runtime.__file__)")
case "$where" in *"$repo"*) echo "edgekit was imported from the clone ($where), not the installed wheel"; exit 1;; esac
echo "imported from: $where"

step "edge configs (the recipes ship inside the package)"
"$bin/edge" configs | tee "$work/configs.txt"
grep -q "^│ demo " "$work/configs.txt" || grep -q " demo " "$work/configs.txt"

step "edge train -c demo on a tiny folder of images"
"$bin/python" - "$work/data" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, n in (("train", 24), ("test", 10)):
    for label, colour in (("red", (200, 40, 40)), ("green", (40, 180, 60)), ("blue", (40, 60, 200))):
        folder = Path(sys.argv[1]) / split / label
        folder.mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(np.array(colour, np.float32) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=92)
PY
# each command's result alone on stdout (progress and tables on stderr), so each step takes the last one's
run=$("$bin/edge" train -c demo --data "$work/data" --limit-per-class 20 --epochs 1 --time-budget 0 --out runs/demo)
[ "$run" = runs/demo ] || { echo "edge train printed '$run' on stdout, not its run directory"; exit 1; }

# convert and bench exit 3 when an artifact is outside its tolerance: a result, not a failure of the flow
ok_or_3() { local rc=0; "$@" || rc=$?; [ $rc -eq 0 ] || [ $rc -eq 3 ] || { echo "exit $rc: $*" >&2; exit $rc; }; }
step "edge convert"
ok_or_3 "$bin/edge" convert "$run" --formats tflite-fp32,tflite-int8,onnx-fp32 --calib-samples 30 --val-samples 30 >"$work/out"
[ "$(cat "$work/out")" = "$run/export" ] || { echo "edge convert printed '$(cat "$work/out")' on stdout"; exit 1; }
step "edge bench"
ok_or_3 "$bin/edge" bench "$run" --samples 30 --runs 3 --warmup 1 >"$work/out"
[ -f "$(cat "$work/out")" ] || { echo "edge bench printed '$(cat "$work/out")' on stdout, not its report"; exit 1; }
step "edge select (the pick on stdout)"
pick=$("$bin/edge" select "$run")
echo "picked: $pick"
[ -n "$pick" ]
step "edge pack --wheels (offline), then the bundle installed"
python_version=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
bundle_file=$(PIP_NO_INDEX=1 "$bin/edge" pack "$run" --format "$pick" --target "$(uname -m)" --python "$python_version" \
  --wheels "$repo/${VENV:-.venv}/wheelhouse" --out "$work/bundle.tar.gz")
[ "$bundle_file" = "$work/bundle.tar.gz" ] || { echo "edge pack printed '$bundle_file' on stdout"; exit 1; }
mkdir "$work/unpacked" && tar -xzf "$bundle_file" -C "$work/unpacked"
bundle=$(ls -d "$work"/unpacked/*)
ls "$bundle/wheels" | grep -q '^edgekit_runtime-.*-py3-none-any.whl$'
PYTHON="$bin/python" PIP_NO_INDEX=1 "$bundle/install.sh"
echo "installed flow: every step passed"
