"""Small helpers of the stages above the runtime, importing nothing heavy (numpy at most)."""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """' Did you mean 'x'?' (or 'x', 'y' or 'z' for n > 1) when a choice is close to name, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close]
    return " Did you mean " + (quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]) + "?"


def fmt_size(n: Optional[float]) -> str:
    """A file size as '96.5 kB' or '2.73 MB' ('' when unknown)."""
    if not n:
        return ""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def balanced_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n indices, equal per class where possible (round-robin over seeded per-class shuffles)."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    picked: List[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(p) for p in pools):
        picked.extend(int(p[depth]) for p in pools if depth < len(p))
        depth += 1
    return np.array(picked[:n], np.int64)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
