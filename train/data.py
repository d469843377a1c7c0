"""Image-folder data sets (a directory, a .tar/.tar.gz of one, or CIFAR-10): decode, check, hash, split.

Everything is decoded once with the runtime's own decoder into uint8 arrays, so training sees exactly
the pixels the device will see. Images that are not larger than the model input and share one size
(CIFAR-10) stay at their native size and are resized inside the tf.data pipeline; all others are
resized here, with the runtime's resize.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgekit import cache
from edgekit.errors import EdgeError
from edgekit.progress import progress_bar
from edgekit_runtime import ImageError, load_rgb, resize_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_ENV = "EDGE_CIFAR10"


@dataclass
class Split:
    x: np.ndarray   # uint8 N x H x W x 3
    y: np.ndarray   # int32 N


@dataclass
class Dataset:
    class_names: List[str]
    train: Split
    val: Split
    test: Split
    data_hash: str
    source: str
    bad_files: List[str] = field(default_factory=list)
    cache_hit: bool = False   # decoded arrays came from the cache of an earlier run
    labeled: bool = True      # False: images without classes (read_unlabeled); every y is -1

    def counts(self) -> Dict[str, Dict[str, int]]:
        return {name: {c: int((s.y == i).sum()) for i, c in enumerate(self.class_names)}
                for name, s in (("train", self.train), ("val", self.val), ("test", self.test))}


class NoClassFolders(EdgeError):
    """A folder or archive without train/<class>/ images (it may still hold unlabelled images)."""


@dataclass
class _Entry:
    split: str
    label: str
    name: str
    read: Callable[[], bytes]


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _classify_path(parts: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(split, class) of an archive/folder path like [..., 'train', 'cat', 'x.jpg'], or None."""
    if len(parts) < 3 or not _is_image_name(parts[-1]):
        return None
    if parts[-3] in ("train", "test"):
        return parts[-3], parts[-2]
    return None


def _folder_entries(root: Path) -> List[_Entry]:
    entries = []
    top_level_classes = not (root / "train").is_dir()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).parts
        for fname in sorted(filenames):
            parts = (("train",) if top_level_classes else ()) + rel + (fname,)
            where = _classify_path(list(parts))
            if where:
                path = Path(dirpath) / fname
                entries.append(_Entry(where[0], where[1], str(path), path.read_bytes))
    return entries


def _tar_entries(path: Path, classify=None) -> Iterator[_Entry]:
    """The archive's images that `classify` (default: train|test/<class>/file) places as (split, label)."""
    classify = classify or _classify_path
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                where = classify(PurePosixPath(member.name).parts)
                if where:
                    fh = tar.extractfile(member)
                    blob = fh.read() if fh else b""
                    yield _Entry(where[0], where[1], f"{path.name}:{member.name}", lambda b=blob: b)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise EdgeError(f"cannot read archive {path}: {exc}.") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (EOFError, OSError):  # a truncated .tar.gz can fail while being sniffed
        return path.name.endswith((".tar", ".tar.gz", ".tgz"))


def _decode(entry: _Entry, target: Tuple[int, int]):
    blob = entry.read()
    digest = hashlib.sha256(blob).hexdigest()
    img = load_rgb(blob, target_size=target, name=entry.name)
    if img.size[0] > target[1] or img.size[1] > target[0]:
        return resize_rgb(img, target), digest
    return np.asarray(img, dtype=np.uint8), digest


def _decode_all(entries, total: Optional[int], target, skip_bad: bool, desc: str):
    arrays, digests, kept, bad = [], [], [], []
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool, progress_bar(desc, total) as advance:
        futures = [(e, pool.submit(_decode, e, target)) for e in entries]
        for entry, fut in futures:
            try:
                arr, digest = fut.result()
                arrays.append(arr)
                digests.append(digest)
                kept.append(entry)
            except ImageError as exc:
                bad.append(str(exc))
            advance()
    if bad and not skip_bad:
        shown = "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise EdgeError(f"{len(bad)} unreadable image(s): {shown}. Fix or remove them, or pass --skip-bad to go on without them.")
    return arrays, digests, kept, bad


def _stack(arrays: List[np.ndarray], target: Tuple[int, int]) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        from PIL import Image
        arrays = [a if a.shape[:2] == target else resize_rgb(Image.fromarray(a), target) for a in arrays]
    return np.stack(arrays) if arrays else np.zeros((0, *target, 3), np.uint8)


def _stratified(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Per class, a seeded shuffle then the first `fraction` (at least one image) to the held-out side."""
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        held.extend(idx[:n_held])
        keep.extend(idx[n_held:])
    return np.sort(np.array(keep, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def _limit(y: np.ndarray, per_class: Optional[int], rng: np.random.Generator) -> np.ndarray:
    if per_class is None:
        return np.arange(len(y))
    picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def _keras_cifar10():
    import tf_keras as keras
    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # urllib raises many types when offline
        raise EdgeError(f"could not download CIFAR-10 ({type(exc).__name__}); set {CIFAR10_ENV} to a local copy "
                        "(a folder or .tar.gz with train/<class>/ and test/<class>/) or pass --data PATH.") from None
    h = hashlib.sha256()
    for arr in (xtr, ytr, xte, yte):
        h.update(np.ascontiguousarray(arr).tobytes())
    return xtr, ytr.ravel().astype(np.int32), xte, yte.ravel().astype(np.int32), h.hexdigest()


def resolve_source(data: str) -> str:
    if data == "cifar10" and os.environ.get(CIFAR10_ENV):
        return os.environ[CIFAR10_ENV]
    return data


def _read_files(path: Path, target: Tuple[int, int], skip_bad: bool):
    """Decode a folder or archive: (xtr, ytr, xte, yte, class names, data hash, bad files)."""
    if path.is_dir():
        entries = _folder_entries(path)
        total = len(entries)
    elif _is_tar(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                total = sum(1 for m in tar.getmembers() if m.isfile() and _classify_path(PurePosixPath(m.name).parts))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise EdgeError(f"cannot read archive {path} (truncated or corrupt: {exc}).") from None
        entries = _tar_entries(path)
    else:
        raise EdgeError(f"data path {path} is neither a folder nor a .tar/.tar.gz archive.")
    if total == 0:
        raise NoClassFolders(f"no images found in {path}: expected train/<class>/*.jpg|png (and test/<class>/...).")
    arrays, digests, kept, bad = _decode_all(entries, total, target, skip_bad, f"decoding {path.name}")
    names = sorted({e.label for e in kept if e.split == "train"})
    if len(names) < 2:
        raise EdgeError(f"{path} has {len(names)} class folder(s) under train/; a classifier needs at least two.")
    stray = sorted({e.label for e in kept if e.split == "test"} - set(names))
    if stray:
        raise EdgeError(f"test/ has class folder(s) missing from train/: {', '.join(stray)}.")
    index = {c: i for i, c in enumerate(names)}
    order = sorted(range(len(kept)), key=lambda i: (kept[i].split, kept[i].label, kept[i].name))
    h = hashlib.sha256()
    for i in order:
        h.update(f"{kept[i].split}/{kept[i].label}/{PurePosixPath(kept[i].name).name}\0{digests[i]}\n".encode())
    tr = [i for i in order if kept[i].split == "train"]
    te = [i for i in order if kept[i].split == "test"]
    xtr, ytr = _stack([arrays[i] for i in tr], target), np.array([index[kept[i].label] for i in tr], np.int32)
    xte, yte = _stack([arrays[i] for i in te], target), np.array([index[kept[i].label] for i in te], np.int32)
    return xtr, ytr, xte, yte, names, h.hexdigest(), bad


def _stamp(path: Path) -> Dict[str, object]:
    """What identifies a source's bytes without reading them: names, sizes and mtimes."""
    if not path.is_dir():
        st = path.stat()
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fname in sorted(filenames):
            st = os.stat(os.path.join(dirpath, fname))
            h.update(f"{os.path.relpath(dirpath, path)}/{fname}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": str(path.resolve()), "files": h.hexdigest()}


def _read_files_cached(path: Path, target, skip_bad: bool, cache_dir: Optional[str]):
    """_read_files, reusing the decoded arrays of an earlier run on unchanged files."""
    parts = {"decoder": 1, "source": _stamp(path), "target": list(target), "skip_bad": skip_bad}
    entry = cache.cache_root("decoded", cache_dir) / cache.key_of(parts)
    found = cache.load(entry, ["xtr", "ytr", "xte", "yte"])
    if found:
        a, meta = found
        return a["xtr"], a["ytr"], a["xte"], a["yte"], meta["names"], meta["data_hash"], meta["bad"], True
    xtr, ytr, xte, yte, names, data_hash, bad = _read_files(path, target, skip_bad)
    cache.store(entry, {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte},
                {**parts, "names": names, "data_hash": data_hash, "bad": bad})
    return xtr, ytr, xte, yte, names, data_hash, bad, False


def load_dataset(data: str, target: Tuple[int, int], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 42, limit_per_class: Optional[int] = None,
                 test_limit_per_class: Optional[int] = None, skip_bad: bool = False,
                 use_cache: bool = True, cache_dir: Optional[str] = None) -> Dataset:
    source = resolve_source(data)
    bad: List[str] = []
    hit = False
    if source == "cifar10":
        xtr, ytr, xte, yte, data_hash = _keras_cifar10()
        names = list(CIFAR10_CLASSES)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise EdgeError(f"data path {path} does not exist (expected 'cifar10', a folder or a .tar/.tar.gz).")
        if use_cache:
            xtr, ytr, xte, yte, names, data_hash, bad, hit = _read_files_cached(path, target, skip_bad, cache_dir)
        else:
            xtr, ytr, xte, yte, names, data_hash, bad = _read_files(path, target, skip_bad)
    rng = np.random.default_rng(seed)
    if len(xte) == 0:
        keep, held = _stratified(ytr, test_fraction, rng)
        xtr, ytr, xte, yte = xtr[keep], ytr[keep], xtr[held], ytr[held]
    sel = _limit(ytr, limit_per_class, rng)
    xtr, ytr = xtr[sel], ytr[sel]
    sel = _limit(yte, test_limit_per_class, rng)
    xte, yte = xte[sel], yte[sel]
    keep, held = _stratified(ytr, val_fraction, rng)
    # The hash names the exact images in use, so a capped run never reuses a full run's cache.
    if limit_per_class or test_limit_per_class:
        data_hash = hashlib.sha256(f"{data_hash}|{limit_per_class}|{test_limit_per_class}|{seed}".encode()).hexdigest()
    return Dataset(names, Split(xtr[keep], ytr[keep]), Split(xtr[held], ytr[held]), Split(xte, yte),
                   data_hash, source, bad, hit)


GLOB_CHARS = set("*?[")


def read_unlabeled(data: str, target: Tuple[int, int]) -> Dataset:
    """Every image of a flat (or any) folder, a .tar(.gz) or a glob, with no classes: calibration and agreement
    need only representative inputs, so unreadable files are skipped (listed in bad_files) unless none is
    readable. train and test are the same pool; the caller draws from it."""
    import glob as globbing
    if GLOB_CHARS & set(data):
        files = sorted(Path(f) for f in globbing.glob(os.path.expanduser(data), recursive=True) if Path(f).is_file())
        entries = [_Entry("test", "", str(f), f.read_bytes) for f in files if _is_image_name(f.name)]
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            entries = [_Entry("test", "", str(f), f.read_bytes) for f in sorted(path.rglob("*"))
                       if _is_image_name(f.name) and f.is_file()]
        elif path.is_file() and _is_tar(path):
            entries = list(_tar_entries(path, lambda parts: ("test", "") if _is_image_name(parts[-1]) else None))
        else:
            raise EdgeError(f"data path {path} does not exist (expected a folder, a .tar/.tar.gz or a glob such as "
                            "'photos/*.jpg').")
    if not entries:
        raise EdgeError(f"no images in {data} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    arrays, digests, kept, bad = _decode_all(entries, len(entries), target, True, "decoding images")
    if not kept:
        raise EdgeError(f"none of the {len(entries)} image(s) in {data} could be read: {bad[0]}")
    h = hashlib.sha256()
    for entry, digest in sorted(zip(kept, digests), key=lambda t: t[0].name):
        h.update(f"{entry.name}\0{digest}\n".encode())
    x = _stack(arrays, target)
    pool = Split(x, np.full(len(x), -1, np.int32))
    return Dataset([], pool, Split(x[:0], pool.y[:0]), pool, h.hexdigest(), data, bad, False, labeled=False)
