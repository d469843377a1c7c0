"""Decoded images read on demand: a split is a decoded array (usually a memory-mapped .npy) and the rows it uses.

Splitting, `--limit-per-class` and shuffling only ever choose row numbers, so a data set larger than memory
costs memory only for the batch being read. Indexing an ImageRows reads those rows into a new numpy array,
as indexing an array would; `take` chooses rows without reading any.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

# Pages of a mapped file that a process has touched count in its resident memory until it lets go of them,
# even though the kernel could drop them: a file larger than this is let go of after each this many bytes
# read, so training on 15 GB does not look (and get killed) like a 15 GB process. Smaller files are kept
# mapped whole, which is as fast as an array in memory.
RELEASE_BYTES = 256 << 20


def npy_header(f, path) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of the C-ordered plain array in the open .npy file `f`."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{path}: .npy format {version} is not one np.save writes for images")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or dtype.hasobject:
        raise ValueError(f"{path}: not a C-ordered plain array")
    return tuple(shape), dtype, f.tell()


class _Mapping:
    """One read-only mapping of a .npy file, shared by every view of it."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            shape, dtype, offset = npy_header(f, path)
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            # an empty file cannot be mapped; an empty array needs no file
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if self.mm is not None and len(self.mm) < offset + size:
            raise ValueError(f"{path}: shorter than its header says")
        self.array = (np.frombuffer(self.mm, dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
                      if self.mm is not None else np.zeros(shape, dtype))
        self.large = size > RELEASE_BYTES
        self.read_since_release = 0

    def note_read(self, nbytes: int) -> None:
        if not self.large or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self.read_since_release += nbytes
        if self.read_since_release >= RELEASE_BYTES:
            self.read_since_release = 0
            self.mm.madvise(mmap.MADV_DONTNEED)  # the page cache keeps the data; only this process lets go


def open_npy(path: Union[str, Path]) -> "ImageRows":
    """A .npy file (as np.save writes it) mapped read-only: what np.load(mmap_mode="r") gives, plus letting go
    of pages already read (RELEASE_BYTES)."""
    m = _Mapping(Path(path))
    return ImageRows(m.array, None, m)


class ImageRows:
    """uint8 N x H x W x 3 images: rows `index` (all when None) of `base`, read when indexed."""

    def __init__(self, base: np.ndarray, index: Optional[np.ndarray] = None, mapping: Optional[_Mapping] = None):
        self.base = base
        self.index = None if index is None else np.asarray(index, np.int64)
        self._mapping = mapping

    @property
    def shape(self) -> Tuple[int, ...]:
        return (len(self),) + tuple(self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.base.shape[1:], dtype=np.int64)) * self.base.dtype.itemsize

    def __len__(self) -> int:
        return len(self.base) if self.index is None else len(self.index)

    def __repr__(self) -> str:
        return f"ImageRows(shape={self.shape}, dtype={self.dtype})"

    def rows(self, key=slice(None)) -> np.ndarray:
        """Row numbers in `base` of `key` (a slice, or integer or boolean positions in this view)."""
        if isinstance(key, slice):
            return (np.arange(len(self.base), dtype=np.int64) if self.index is None else self.index)[key]
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self)} images")
            key = np.flatnonzero(key)
        if key.dtype.kind not in "iu":
            raise IndexError(f"only integers, slices and boolean or integer arrays index images, not {key.dtype}")
        if self.index is not None:
            return self.index[key]
        n = len(self.base)
        if key.size and (key.min() < -n or key.max() >= n):
            raise IndexError(f"image index out of range for {n} images")
        return np.where(key < 0, key + n, key).astype(np.int64)

    def take(self, key) -> "ImageRows":
        """The images at `key` as another view: nothing is read."""
        return ImageRows(self.base, self.rows(key), self._mapping)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # the first index picks images, the rest index within them
            if not key or key[0] is Ellipsis:
                return self[:][key]
            out = self[key[0]]
            if len(key) == 1:
                return out
            return out[key[1:]] if isinstance(key[0], (int, np.integer)) else out[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._read(self.rows(np.array([key]))).reshape(self.base.shape[1:])
        if isinstance(key, slice) and self.index is None:
            out = np.array(self.base[key])  # one contiguous read
            self._note(out.nbytes)
            return out
        return self._read(self.rows(key))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        shape = rows.shape
        rows = rows.ravel()
        # a file larger than RELEASE_BYTES is read from disk more than from the page cache: rows in file order
        # make the reads go forward, which a disk (and readahead) prefers. A smaller one is in the page cache,
        # where the extra copy would cost more than the order saves.
        large = self._mapping is not None and self._mapping.large
        if large and rows.size > 1 and not (rows[1:] >= rows[:-1]).all():
            order = np.argsort(rows, kind="stable")
            out = np.empty((len(rows),) + self.base.shape[1:], self.base.dtype)
            out[order] = self.base[rows[order]]
        else:
            out = np.asarray(self.base[rows])
        self._note(out.nbytes)
        return out.reshape(shape + self.base.shape[1:])

    def _note(self, nbytes: int) -> None:
        if self._mapping is not None:
            self._mapping.note_read(nbytes)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), 256):
            yield from self[start:start + 256]
