"""The bottleneck-feature cache: backbone outputs of un-augmented images, computed once, reused."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from edgekit import cache
from edgekit.progress import progress_bar
from edgekit.train.pipeline import make_dataset


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
    """Return ({split: features}, hit). Missing or damaged entries are recomputed."""
    entry = cache.cache_root("features", cache_dir) / cache.key_of(key_parts)
    found = cache.load(entry, list(splits))
    if found and all(len(found[0][n]) == len(splits[n]) for n in splits):
        return found[0], True
    feats = {name: extract(features_model, x, spec, batch_size, f"backbone features ({name})")
             for name, x in splits.items()}
    cache.store(entry, feats, key_parts)
    return feats, False
