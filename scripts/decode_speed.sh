#!/usr/bin/env bash
# First (cold-cache) decode of CIFAR-10 (60,000 JPEGs in ../shared/datasets/cifar10-jpeg.tar.gz, or $EDGE_CIFAR10)
# into the decoded cache, timed three ways side by side, one run each, each in a fresh process with an empty
# cache (issue 30: "the first decode takes <= 0.6x today's single-process time"):
#   before     the decoder of git revision BEFORE (default HEAD; one process, a thread pool) — "today"
#   1 worker   this tree's decoder in one process (EDGE_DECODE_WORKERS=1)
#   parallel   this tree's decoder, a worker process per core (EDGE_DECODE_WORKERS unset, or WORKERS=N)
# and prints each time, its peak RSS and the ratios. The archive is read once first, so that every run finds it
# in the page cache.
# Usage: [BEFORE=REV] [WORKERS=N] scripts/decode_speed.sh   (needs .venv: make venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
data=${EDGE_CIFAR10:-../shared/datasets/cifar10-jpeg.tar.gz}
[ -f "$data" ] || { echo "no CIFAR-10 archive at $data (set EDGE_CIFAR10)"; exit 1; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
lscpu 2>/dev/null | grep -m1 'Model name' || grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc); data: $data; before: ${BEFORE:-HEAD}"
git show "${BEFORE:-HEAD}:train/data.py" >"$out/before_data.py"
cat "$data" >/dev/null

measure() {  # label, module (before|now), env...
  local label=$1 which=$2; shift 2
  mkdir -p "$out/cache-$label"
  env "$@" EDGE_CACHE_DIR="$out/cache-$label" "$py" - "$which" "$data" "$out" >"$out/$label.txt" 2>"$out/$label.log" <<'PY'
import importlib.util, resource, sys, time
which, data, out = sys.argv[1:4]
if which == "before":
    spec = importlib.util.spec_from_file_location("before_data", f"{out}/before_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["before_data"] = mod
    spec.loader.exec_module(mod)
else:
    from edgekit.train import data as mod
t = time.perf_counter()
d = mod.load_dataset(data, (32, 32))
seconds = time.perf_counter() - t
assert not d.cache_hit
n = len(d.train.y) + len(d.val.y) + len(d.test.y)
print(f"{seconds:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} {d.data_hash} {n}")
PY
  read -r secs rss hash n <"$out/$label.txt" || { echo "$label failed:"; tail -5 "$out/$label.log"; exit 1; }
  printf '%-10s %7.2f s   %s images   peak RSS %5s MB   data hash %s\n' "$label" "$secs" "$n" "$rss" "${hash:0:12}"
  eval "t_${which}_${label//[^a-z0-9]/_}=$secs"
  hashes+=("$hash")
}

hashes=()
measure before before X=1
measure 1worker now EDGE_DECODE_WORKERS=1
if [ -n "${WORKERS:-}" ]; then measure parallel now EDGE_DECODE_WORKERS="$WORKERS"; else measure parallel now -u EDGE_DECODE_WORKERS; fi
[ "${hashes[0]}" = "${hashes[1]}" ] && [ "${hashes[1]}" = "${hashes[2]}" ] || echo "DATA HASHES DIFFER"
"$py" -c "import sys; b, o, p = map(float, sys.argv[1:]); print(f'parallel / before: {p / b:.2f}x   parallel / 1 worker: {p / o:.2f}x')" \
  "$t_before_before" "$t_now_1worker" "$t_now_parallel"
