"""Write a folder of N JPEGs at S px in CIFAR-10's 10 classes, for the streaming benchmark (issue 30).

Each image is a CIFAR-10 image (from ../shared/datasets/cifar10-jpeg.tar.gz or $EDGE_CIFAR10) enlarged to S x S
(bicubic), shifted by a few pixels and given Gaussian noise (sigma 6) from its own seed, then saved as a JPEG
(quality 90): real decoding work at the size of a photo, and different bytes for every file even where the
source image repeats. Files go to OUT/train/<class>/NNNNNN.jpg, written to a temporary name and renamed, so an
interrupted run is resumed by running it again (existing files are kept). One process per core.

Usage: .venv/bin/python scripts/make_big_folder.py OUT [--count 100000] [--size 224]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = os.environ.get("EDGE_CIFAR10", str(Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10-jpeg.tar.gz"))
_SOURCES: list = []


def read_sources(path: str) -> list:
    """(class, JPEG bytes) of every image in the archive, in archive order."""
    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 3 and parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
                out.append((parts[-2], tar.extractfile(m).read()))
    if not out:
        sys.exit(f"no images in {path}")
    return out


def _init(sources: list) -> None:
    _SOURCES[:] = sources


def write_one(job) -> int:
    i, out, size = job
    label, blob = _SOURCES[i % len(_SOURCES)]
    target = Path(out) / "train" / label / f"{i:06d}.jpg"
    if target.exists():
        return 0
    rng = np.random.default_rng(i)
    img = Image.open(io.BytesIO(blob)).convert("RGB").resize((size + 8, size + 8), Image.BICUBIC)
    dx, dy = rng.integers(0, 9, 2)
    a = np.asarray(img, np.float32)[dy:dy + size, dx:dx + size]
    a = np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    tmp = target.with_name(f".{target.name}.tmp")
    Image.fromarray(a).save(tmp, "JPEG", quality=90)
    os.replace(tmp, target)
    return 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    sources = read_sources(SOURCE)
    for label in sorted({c for c, _ in sources}):
        (Path(args.out) / "train" / label).mkdir(parents=True, exist_ok=True)
    started, written = time.perf_counter(), 0
    with Pool(os.cpu_count(), initializer=_init, initargs=(sources,)) as pool:
        jobs = ((i, args.out, args.size) for i in range(args.count))
        for done, w in enumerate(pool.imap_unordered(write_one, jobs, chunksize=256), 1):
            written += w
            if done % 10_000 == 0 or done == args.count:
                print(f"{done:,}/{args.count:,} images ({written:,} written) in {time.perf_counter() - started:.0f} s",
                      flush=True)


if __name__ == "__main__":
    main()
