"""Compare two export directories' manifest.json and bench/report.json, timings and timestamps left out.

    python scripts/same_outputs.py RUN_A RUN_B     # each: a run directory converted and benchmarked

Used to show that a refactor changed no output: prints every differing key path (or "identical") and exits
1 when any differs. Timings, timestamps, paths of the two runs, device health and package versions are
dropped before comparing; everything else (statuses, accuracies, agreement, parity, sizes, file hashes,
op lists, tensor shapes, notes, the order of rows) must match exactly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TIMING = {"created", "seconds", "convert_seconds", "latency", "cold", "memory", "health_before", "health_after",
          "fingerprint", "headline", "command", "tools", "platform", "gmacs_per_s", "value_ms"}


def normalized(value, root: str):
    if isinstance(value, dict):
        return {k: normalized(v, root) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [normalized(v, root) for v in value]
    if isinstance(value, str) and (value == root or value.startswith(root + "/")):
        return "RUN" + value[len(root):]
    return value


def differences(a, b, path="") -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'B' if k not in a else 'A'}")
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}"]


def main(a: str, b: str) -> int:
    found = 0
    for rel in ("export/manifest.json", "bench/report.json"):
        docs = [normalized(normalized(json.loads((Path(r) / rel).read_text()), str(Path(r).resolve())), r)
                for r in (a, b)]
        diff = differences(*docs)
        print(f"{rel}: " + ("identical (timings and timestamps left out)" if not diff else f"{len(diff)} differences"))
        for line in diff:
            print("  " + line)
        found += len(diff)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
