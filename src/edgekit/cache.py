"""On-disk caches of numpy arrays (decoded images, backbone features), keyed by a content hash.

Each entry is a directory written under a temporary name and renamed into place, so a reader sees a
whole entry or none; an entry that fails to load is treated as a miss, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

ENV = "EDGE_CACHE_DIR"


def cache_root(kind: str, cache_dir: Optional[str] = None) -> Path:
    base = cache_dir or os.environ.get(ENV) or Path.home() / ".cache" / "edgekit"
    return Path(base).expanduser() / kind


def key_of(parts: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def load(entry: Path, names, open_array: Callable[[Path], object] = np.load
         ) -> Optional[Tuple[Dict[str, np.ndarray], dict]]:
    """({name: array}, meta) of a complete entry, or None. `open_array` reads one .npy (e.g. memory-mapped)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return {n: open_array(entry / f"{n}.npy") for n in names}, meta
    except (OSError, ValueError):
        return None


def begin(entry: Path) -> Optional[Path]:
    """A new, empty folder beside `entry` to write it in (then `commit`), or None when the cache is not writable."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    except OSError:
        return None


def commit(tmp: Path, entry: Path, meta: dict) -> bool:
    """Give `tmp` (from `begin`) its meta.json and put it in place of `entry`; False (and tmp gone) if that fails."""
    try:
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        return True
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def store(entry: Path, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    """Write an entry atomically; a cache that can't be written costs time, not the run."""
    tmp = begin(entry)
    if tmp is None:
        return
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    commit(tmp, entry, meta)
