"""Image-folder data sets (a directory, a .tar/.tar.gz of one, or CIFAR-10): decode, check, hash, split.

Everything is decoded once with the runtime's own decoder into uint8 arrays, so training sees exactly
the pixels the device will see. Images that are not larger than the model input and share one size
(CIFAR-10) stay at their native size and are resized inside the tf.data pipeline; all others are
resized here, with the runtime's resize.

Decoding runs on every core into .npy files in the decoded cache (decode.py), which are then memory-mapped:
the splits are row numbers into them (images.ImageRows), so no split is held in memory whole.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit import cache
from edgekit.errors import EdgeError
from edgekit.train import archive, decode
from edgekit.train.images import ImageRows, open_npy

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_ENV = "EDGE_CIFAR10"


@dataclass
class Split:
    x: Union[ImageRows, np.ndarray]  # uint8 N x H x W x 3; indexing reads those images (images.py)
    y: np.ndarray                    # int32 N


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
    where: tuple   # where its bytes are: decode.Item.where


def _is_image_name(name: str) -> bool:
    dot = name.rfind(".")  # PurePosixPath(name).suffix, without building a path for each of 60,000 members
    return not name.startswith(".") and 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_SUFFIXES


def _member_parts(name: str) -> Tuple[str, ...]:
    """PurePosixPath(name).parts as far as _classify_path looks (the last three), several times faster."""
    return tuple(p for p in name.split("/") if p and p != ".")


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
                entries.append(_Entry(where[0], where[1], str(path), ("file", str(path))))
    return entries


def _tar_entries(path: Path, classify=None) -> List[_Entry]:
    """The archive's images that `classify` (default: train|test/<class>/file) places as (split, label), each
    found by its offset in the uncompressed stream: the rows' order must be known before decoding starts, and the
    bytes are read in a second forward pass as chunks are handed out (decode._jobs), so the archive never has
    to fit in memory. The first image of each split comes with its bytes (decode probes its size)."""
    classify = classify or _classify_path
    probed, placed = set(), {}

    def first_of_split(name: str) -> bool:
        where = placed[name] = classify(_member_parts(name))
        if not where or where[0] in probed:
            return False
        probed.add(where[0])
        return True

    try:
        found = archive.members(str(path), first_of_split)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise EdgeError(f"cannot read archive {path} (truncated or corrupt: {exc}).") from None
    entries = []
    whole = str(path.resolve())
    for m in found:
        where = placed[m.name]
        if where:
            at = ("bytes", m.blob) if m.blob is not None else ("tar", whole, m.offset, m.size)
            entries.append(_Entry(where[0], where[1], f"{path.name}:{m.name}", at))
    return entries


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (EOFError, OSError):  # a truncated .tar.gz can fail while being sniffed
        return path.name.endswith((".tar", ".tar.gz", ".tgz"))


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


_OUT = {"train": "xtr", "test": "xte"}


def _decode_source(path: Path, target: Tuple[int, int], skip_bad: bool, folder: Path):
    """Decode a folder or archive into folder/{xtr,ytr,xte,yte}.npy: (class names, data hash, bad files)."""
    if path.is_dir():
        entries = _folder_entries(path)
    elif _is_tar(path):
        entries = _tar_entries(path)
    else:
        raise EdgeError(f"data path {path} is neither a folder nor a .tar/.tar.gz archive.")
    if not entries:
        raise NoClassFolders(f"no images found in {path}: expected train/<class>/*.jpg|png (and test/<class>/...).")
    # rows in the order the data hash lists them (split, class, name), so no pass reorders the decoded files
    order = sorted(range(len(entries)), key=lambda i: (entries[i].split, entries[i].label, entries[i].name, i))
    slots, used = [0] * len(entries), {"train": 0, "test": 0}
    for i in order:
        slots[i] = used[entries[i].split]
        used[entries[i].split] += 1
    items = [decode.Item(e.name, _OUT[e.split], slots[i], e.where) for i, e in enumerate(entries)]
    result = decode.decode_into(items, target, folder, f"decoding {path.name}")
    bad = result.bad
    if bad and not skip_bad:
        shown = "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise EdgeError(f"{len(bad)} unreadable image(s): {shown}. Fix or remove them, or pass --skip-bad to go on without them.")
    kept = [i for i in order if result.digests[i] is not None]
    names = sorted({entries[i].label for i in kept if entries[i].split == "train"})
    if len(names) < 2:
        raise EdgeError(f"{path} has {len(names)} class folder(s) under train/; a classifier needs at least two.")
    stray = sorted({entries[i].label for i in kept if entries[i].split == "test"} - set(names))
    if stray:
        raise EdgeError(f"test/ has class folder(s) missing from train/: {', '.join(stray)}.")
    index = {c: i for i, c in enumerate(names)}
    h = hashlib.sha256()
    for i in kept:
        e = entries[i]
        h.update(f"{e.split}/{e.label}/{e.name.rsplit('/', 1)[-1]}\0{result.digests[i]}\n".encode())
    for split, name in _OUT.items():
        if name not in result.paths:
            np.save(folder / f"{name}.npy", np.zeros((0, *target, 3), np.uint8))
        labels = [index[entries[i].label] for i in kept if entries[i].split == split]
        np.save(folder / f"y{name[1:]}.npy", np.array(labels, np.int32))
    return names, h.hexdigest(), bad


_ARRAYS = ["xtr", "ytr", "xte", "yte"]


def _open(path: Path):
    """Images memory-mapped, labels (4 bytes an image) read whole."""
    return open_npy(path) if path.name.startswith("x") else np.load(path)


def _work_folder(entry: Path) -> Path:
    """Where to decode when the result is not kept: beside the cache (a disk sized for it) if writable."""
    return cache.begin(entry) or Path(tempfile.mkdtemp(prefix="edgekit-decoded-"))


def _decode_and_open(path: Path, target, skip_bad: bool, folder: Path):
    """_decode_source into `folder`, then its arrays mapped: ({name: array}, names, hash, bad); the folder is
    removed if anything fails."""
    try:
        names, data_hash, bad = _decode_source(path, target, skip_bad, folder)
        arrays = {n: _open(folder / f"{n}.npy") for n in _ARRAYS}
    except BaseException:
        decode.remove(folder)
        raise
    return arrays, names, data_hash, bad


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


def _read_files_cached(path: Path, target, skip_bad: bool, cache_dir: Optional[str], use_cache: bool = True):
    """(arrays, class names, data hash, bad files, hit): decoded once into the cache, memory-mapped from it."""
    parts = {"decoder": 1, "source": _stamp(path), "target": list(target), "skip_bad": skip_bad}
    entry = cache.cache_root("decoded", cache_dir) / cache.key_of(parts)
    found = cache.load(entry, _ARRAYS, _open) if use_cache else None
    if found and len(found[0]["xtr"]) == len(found[0]["ytr"]) and len(found[0]["xte"]) == len(found[0]["yte"]):
        a, meta = found
        return a, meta["names"], meta["data_hash"], meta["bad"], True
    folder = _work_folder(entry)
    a, names, data_hash, bad = _decode_and_open(path, target, skip_bad, folder)
    if not use_cache or folder.parent != entry.parent or \
            not cache.commit(folder, entry, {**parts, "names": names, "data_hash": data_hash, "bad": bad}):
        decode.remove(folder)  # the mappings keep the files' data until they are dropped
    return a, names, data_hash, bad, False


def load_dataset(data: str, target: Tuple[int, int], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 42, limit_per_class: Optional[int] = None,
                 test_limit_per_class: Optional[int] = None, skip_bad: bool = False,
                 use_cache: bool = True, cache_dir: Optional[str] = None) -> Dataset:
    source = resolve_source(data)
    bad: List[str] = []
    hit = False
    if source == "cifar10":
        xtr, ytr, xte, yte, data_hash = _keras_cifar10()
        xtr, xte = ImageRows(xtr), ImageRows(xte)
        names = list(CIFAR10_CLASSES)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise EdgeError(f"data path {path} does not exist (expected 'cifar10', a folder or a .tar/.tar.gz).")
        a, names, data_hash, bad, hit = _read_files_cached(path, target, skip_bad, cache_dir, use_cache)
        xtr, ytr, xte, yte = (a[n] for n in _ARRAYS)
    # every split is row numbers into the decoded arrays (take): nothing is copied
    rng = np.random.default_rng(seed)
    if len(xte) == 0:
        keep, held = _stratified(ytr, test_fraction, rng)
        xtr, ytr, xte, yte = xtr.take(keep), ytr[keep], xtr.take(held), ytr[held]
    sel = _limit(ytr, limit_per_class, rng)
    xtr, ytr = xtr.take(sel), ytr[sel]
    sel = _limit(yte, test_limit_per_class, rng)
    xte, yte = xte.take(sel), yte[sel]
    keep, held = _stratified(ytr, val_fraction, rng)
    # The hash names the exact images in use, so a capped run never reuses a full run's cache.
    if limit_per_class or test_limit_per_class:
        data_hash = hashlib.sha256(f"{data_hash}|{limit_per_class}|{test_limit_per_class}|{seed}".encode()).hexdigest()
    return Dataset(names, Split(xtr.take(keep), ytr[keep]), Split(xtr.take(held), ytr[held]), Split(xte, yte),
                   data_hash, source, bad, hit)


GLOB_CHARS = set("*?[")


def read_unlabeled(data: str, target: Tuple[int, int]) -> Dataset:
    """Every image of a flat (or any) folder, a .tar(.gz) or a glob, with no classes: calibration and agreement
    need only representative inputs, so unreadable files are skipped (listed in bad_files) unless none is
    readable. train and test are the same pool; the caller draws from it."""
    import glob as globbing
    if GLOB_CHARS & set(data):
        files = sorted(Path(f) for f in globbing.glob(os.path.expanduser(data), recursive=True) if Path(f).is_file())
        entries = [_Entry("test", "", str(f), ("file", str(f))) for f in files if _is_image_name(f.name)]
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            entries = [_Entry("test", "", str(f), ("file", str(f))) for f in sorted(path.rglob("*"))
                       if _is_image_name(f.name) and f.is_file()]
        elif path.is_file() and _is_tar(path):
            entries = list(_tar_entries(path, lambda parts: ("test", "") if _is_image_name(parts[-1]) else None))
        else:
            raise EdgeError(f"data path {path} does not exist (expected a folder, a .tar/.tar.gz or a glob such as "
                            "'photos/*.jpg').")
    if not entries:
        raise EdgeError(f"no images in {data} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    # not cached (a folder of photos to calibrate on is small, and may change between runs): decoded beside the
    # cache, mapped, and the files removed at once
    folder = _work_folder(cache.cache_root("decoded") / "unlabeled")
    try:
        items = [decode.Item(e.name, "x", i, e.where) for i, e in enumerate(entries)]
        result = decode.decode_into(items, target, folder, "decoding images")
        kept = [(e.name, d) for e, d in zip(entries, result.digests) if d is not None]
        if not kept:
            raise EdgeError(f"none of the {len(entries)} image(s) in {data} could be read: {result.bad[0]}")
        x = open_npy(result.paths["x"])
    finally:
        decode.remove(folder)
    h = hashlib.sha256()
    for name, digest in sorted(kept, key=lambda t: t[0]):
        h.update(f"{name}\0{digest}\n".encode())
    pool = Split(x, np.full(len(x), -1, np.int32))
    return Dataset([], pool, Split(x.take(slice(0, 0)), pool.y[:0]), pool, h.hexdigest(), data, result.bad, False,
                   labeled=False)
