"""The bottleneck-feature cache: backbone outputs of un-augmented images, computed once, reused."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from edgekit.progress import progress_bar
from edgekit.train.pipeline import make_dataset


def cache_root(cache_dir: Optional[str]) -> Path:
    base = cache_dir or os.environ.get("EDGE_CACHE_DIR") or Path.home() / ".cache" / "edgekit"
    return Path(base).expanduser() / "features"


def cache_key(parts: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def extract(features_model, x: np.ndarray, spec, batch_size: int, desc: str) -> np.ndarray:
    ds = make_dataset(x, None, spec, batch_size, num_classes=1)
    out = []
    with progress_bar(desc, len(x)) as advance:
        for batch in ds:
            out.append(features_model.predict_on_batch(batch))
            advance(int(batch.shape[0]))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,) + features_model.output_shape[1:], np.float32)


def cached_features(key_parts: Dict[str, object], cache_dir: Optional[str], features_model, splits, spec,
                    batch_size: int):
    """Return ({split: features}, hit). Missing or damaged cache entries are recomputed, never trusted."""
    root = cache_root(cache_dir)
    entry = root / cache_key(key_parts)
    if (entry / "meta.json").is_file():
        try:
            feats = {name: np.load(entry / f"{name}.npy") for name in splits}
            if all(len(feats[n]) == len(splits[n]) for n in splits):
                return feats, True
        except (OSError, ValueError):
            pass
    feats = {name: extract(features_model, x, spec, batch_size, f"backbone features ({name})")
             for name, x in splits.items()}
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for name, arr in feats.items():
            np.save(tmp / f"{name}.npy", arr)
        (tmp / "meta.json").write_text(json.dumps(key_parts, indent=2, sort_keys=True))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a cache that can't be written costs time, not the run
    return feats, False
