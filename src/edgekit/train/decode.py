"""Decoding many images on every core, each straight into its row of a .npy file on disk.

A worker process per core (EDGE_DECODE_WORKERS sets another number; 1 decodes in this process) decodes
chunks of images with the runtime's decoder and writes each into its preallocated row, so the decoded set
never has to fit in memory and only digests and messages come back. One worker and many run the same
code, so they give the same bytes.

What shape the images take follows one rule per output: an image larger than the model input is resized to it,
smaller ones keep their size when every image of the output shares it (CIFAR-10's 32 px, enlarged later in
the tf.data pipeline), and when sizes are mixed every image is resized to the input.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from edgekit.errors import EdgeError
from edgekit.train import pool
from edgekit.train.archive import open_stream
from edgekit.train.images import npy_header, open_npy
from edgekit.progress import console, progress_bar
from edgekit_runtime import ImageError, load_rgb, resize_rgb

WORKERS_ENV = "EDGE_DECODE_WORKERS"
CHUNK = 128           # images per task: a smooth progress bar, and pickling costs little next to decoding
CHUNK_BYTES = 16 << 20  # and at most this many bytes of an archive's members: two tasks per worker are in flight
# worker processes take ~0.5 s to start: decoding that would take less than this here stays here
MIN_PARALLEL_SECONDS = 2.0
COPY_BYTES = 64 << 20  # per step when a finished output is compacted or resized: bounded memory

BAD, TARGET, NATIVE, RESIZED = 0, 1, 2, 3   # what became of each image


@dataclass(frozen=True)
class Item:
    """One image to decode into row `slot` of output `split`. `where` is ("file", path),
    ("tar", archive, offset, size) for a member's bytes in the uncompressed stream, or ("bytes", blob)."""
    name: str
    split: str
    slot: int
    where: tuple


@dataclass
class Decoded:
    digests: List[Optional[str]]     # sha256 of each item's file, None where it was unreadable
    bad: List[str]                   # one message per unreadable item, in item order
    paths: Dict[str, Path]           # split -> .npy holding its readable images, in slot order


def worker_count() -> int:
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise EdgeError(f"{WORKERS_ENV}={raw!r}: expected the number of decoding processes (1 or more).")
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cpusets), not the machine's
    except AttributeError:
        return os.cpu_count() or 1


# --- reading and decoding one image: runs in the workers ---

_STREAMS: Dict[str, object] = {}     # archive -> its open uncompressed stream, in this process
_OUTPUTS: Dict[str, "_RowFile"] = {}  # .npy path -> its open file, in this process


def _read(where: tuple) -> bytes:
    kind = where[0]
    if kind == "bytes":
        return where[1]
    if kind == "file":
        return Path(where[1]).read_bytes()
    archive, offset, size = where[1:]
    stream = _STREAMS.get(archive)
    # members are read in archive order, so a compressed stream is only ever read forward
    if stream is None or stream.tell() > offset:
        if stream is not None:
            stream.close()
        stream = _STREAMS[archive] = open_stream(archive)
    stream.seek(offset)
    blob = stream.read(size)
    if len(blob) != size:
        raise EdgeError(f"cannot read archive {archive}: it ended inside a member (truncated?).")
    return blob


def _pixels(blob: bytes, target: Tuple[int, int], name: str) -> np.ndarray:
    img = load_rgb(blob, target_size=target, name=name)
    if img.size[0] > target[1] or img.size[1] > target[0]:
        return resize_rgb(img, target)
    return np.asarray(img, dtype=np.uint8)


class _RowFile:
    """A .npy file written row by row with pwrite. Not a writable memmap: every page a process writes through a
    mapping counts in its resident memory until it unmaps, so two workers filling a 15 GB cache looked like two
    6 GB processes; written with pwrite, the data goes to the page cache, which the kernel reclaims."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.shape, _, self.offset = npy_header(f, path)
        self.fd = os.open(path, os.O_WRONLY)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64))

    def write(self, slot: int, rows: np.ndarray) -> None:
        """One image (H x W x 3) into row `slot`, or a block of them (n x H x W x 3) from row `slot` on."""
        if rows.shape[-3:] != self.shape[1:]:
            raise ValueError(f"a row of {self.shape[1:]} cannot hold an image of {rows.shape[-3:]}")
        data = memoryview(np.ascontiguousarray(rows, np.uint8)).cast("B")
        at = self.offset + slot * self.row_bytes
        while len(data):
            n = os.pwrite(self.fd, data, at)
            data, at = data[n:], at + n

    def close(self) -> None:
        os.close(self.fd)


def _output(path: str) -> _RowFile:
    out = _OUTPUTS.get(path)
    if out is None:
        out = _OUTPUTS[path] = _RowFile(path)
    return out


def decode_chunk(job) -> List[tuple]:
    """(item number, what became of it, digest or message) for each image of a chunk, its pixels written."""
    items, target, natives, folder = job
    results = []
    paths = {split: (os.path.join(folder, f"{split}.target.npy"), os.path.join(folder, f"{split}.native.npy"))
             for split in {it[2] for it in items}}
    for i, name, split, slot, where in items:
        blob = _read(where)
        digest = hashlib.sha256(blob).hexdigest()
        try:
            arr = _pixels(blob, target, name)
        except ImageError as exc:
            results.append((i, BAD, str(exc)))
            continue
        if arr.shape[:2] == target:
            kind = TARGET
        elif arr.shape[:2] == natives.get(split):
            kind = NATIVE
        else:
            # neither the input size nor the split's first size: sizes are mixed, so this split ends up at the
            # input size, and resizing now (as the parent would later) keeps the odd image out of memory
            kind, arr = RESIZED, resize_rgb(_image(arr), target)
        _output(paths[split][kind == NATIVE]).write(slot, arr)
        results.append((i, kind, digest))
    return results


def _image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr)


def _close_all() -> None:
    for stream in _STREAMS.values():
        stream.close()
    _STREAMS.clear()
    for out in _OUTPUTS.values():
        out.close()
    _OUTPUTS.clear()


# --- the parent: allocate, hand out chunks, finish each output ---

def _probe(items: Sequence[Item], target, split: str) -> Tuple[Optional[Tuple[int, int]], float]:
    """The size of the split's first readable image when it is smaller than the input (else None), and the
    seconds one image takes to decode here."""
    for item in [it for it in items if it.split == split][:20]:
        blob = _read(item.where)
        try:
            shape = _pixels(blob, target, item.name).shape[:2]
        except ImageError:
            continue
        start = time.perf_counter()  # again: the first decode also pays for setting the decoder up
        _pixels(blob, target, item.name)
        return (None if shape == target else shape), time.perf_counter() - start
    return None, 0.0


def _jobs(items: Sequence[Item], target, natives, folder: str) -> Iterator[tuple]:
    """The chunks of work, made as they are handed out. An archive member's bytes are read here, in archive
    order, and travel with its chunk: the archive is decompressed once, not once in every worker (CIFAR-10's
    .tar.gz on 2 cores: ~1.5 s less CPU in the workers, ~0.5 s more here)."""
    chunk, size = [], 0
    for i, it in enumerate(items):
        where = ("bytes", _read(it.where)) if it.where[0] == "tar" else it.where
        chunk.append((i, it.name, it.split, it.slot, where))
        size += len(where[1]) if where[0] == "bytes" else 0
        if len(chunk) == CHUNK or size >= CHUNK_BYTES or i == len(items) - 1:
            yield chunk, target, natives, folder
            chunk, size = [], 0


def _run(jobs: Iterator[tuple], workers: int, advance):
    """Each chunk's results, as they come; workers <= 1 decodes here."""
    try:
        if workers > 1:
            try:
                yield from pool.results("edgekit.train.decode:decode_chunk", jobs, workers, advance)
            except pool.WorkerStopped as exc:
                raise EdgeError(f"{exc}: see above, or set {WORKERS_ENV}=1 to decode in this process.") from None
            return
        for job in jobs:
            yield decode_chunk(job)
            advance(len(job[0]))
    finally:
        _close_all()


def decode_into(items: Sequence[Item], target: Tuple[int, int], folder: Path, desc: str,
                workers: Optional[int] = None) -> Decoded:
    """Decode `items` into folder/<split>.npy (rows in slot order, unreadable images left out)."""
    target = tuple(target)
    counts: Dict[str, int] = {}
    for it in items:
        counts[it.split] = max(counts.get(it.split, 0), it.slot + 1)
    try:
        probes = {split: _probe(items, target, split) for split in counts}
    finally:
        _close_all()
    natives = {split: shape for split, (shape, _) in probes.items()}
    per_image = max((seconds for _, seconds in probes.values()), default=0.0)
    need = sum(n * int(np.prod(natives[split] or target)) * 3 for split, n in counts.items())
    _disk_check(folder, need, len(items), target)
    for split, n in counts.items():
        # sparse files: a row takes disk space only once written, so the size not used costs nothing
        np.lib.format.open_memmap(folder / f"{split}.target.npy", "w+", np.uint8, (n, *target, 3))
        if natives[split]:
            np.lib.format.open_memmap(folder / f"{split}.native.npy", "w+", np.uint8, (n, *natives[split], 3))
    workers = worker_count() if workers is None else workers
    if per_image * len(items) < MIN_PARALLEL_SECONDS or sys.platform == "win32":  # (Windows: no waiting on pipes)
        workers = 1
    workers = max(1, min(workers, -(-len(items) // CHUNK)))  # no more workers than chunks
    console.print(f"decoding {len(items):,} images ({_size(need)} decoded) into {folder.parent} "
                  f"({_size(shutil.disk_usage(folder).free)} free), {workers} process{'es' if workers > 1 else ''}",
                  highlight=False, soft_wrap=True)
    jobs = _jobs(items, target, natives, str(folder))
    kinds = np.zeros(len(items), np.int8)
    digests: List[Optional[str]] = [None] * len(items)
    messages: Dict[int, str] = {}
    with progress_bar(desc, len(items)) as advance:
        for results in _run(jobs, workers, advance):
            for i, kind, said in results:
                kinds[i] = kind
                if kind == BAD:
                    messages[i] = said
                else:
                    digests[i] = said
    paths = {split: _finish(folder, split, [(it.slot, kinds[i]) for i, it in enumerate(items) if it.split == split],
                            target) for split in counts}
    return Decoded(digests, [messages[i] for i in sorted(messages)], paths)


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _disk_check(folder: Path, need: int, n: int, target) -> None:
    free = shutil.disk_usage(folder).free
    if free < need * 1.05 + (64 << 20):
        raise EdgeError(f"the decoded images ({n:,} at up to {target[1]}x{target[0]}) need {_size(need)} on disk and "
                        f"{folder.parent} has {_size(free)} free: free some space, or point EDGE_CACHE_DIR at a "
                        "larger disk.")


def _finish(folder: Path, split: str, slots: List[Tuple[int, int]], target) -> Path:
    """Turn a split's row files into one folder/<split>.npy of its readable images in slot order."""
    final = folder / f"{split}.npy"
    kept = np.array(sorted(slot for slot, kind in slots if kind != BAD), np.int64)
    kind_of = dict(slots)
    found = {kind_of[s] for s in kept.tolist()}
    tfile, nfile = folder / f"{split}.target.npy", folder / f"{split}.native.npy"
    if found == {NATIVE}:
        src, resize = nfile, False
    else:
        src, resize = tfile, NATIVE in found  # mixed: the native-size images are resized like the rest
    if len(kept) == len(slots) and not resize:
        os.replace(src, final)
    else:
        # read through open_npy (which lets go of pages read) and written with plain writes, so that copying a
        # split larger than memory does not hold it in this process (see _RowFile)
        a = open_npy(src)
        b = open_npy(nfile) if resize else None
        np.lib.format.open_memmap(final, "w+", np.uint8, (len(kept), *a.shape[1:]))
        out = _RowFile(str(final))
        try:
            step = max(1, COPY_BYTES // max(1, out.row_bytes))
            for s in range(0, len(kept), step):
                rows = kept[s:s + step]
                block = a[rows]
                if resize:
                    for j, slot in enumerate(rows.tolist()):
                        if kind_of[slot] == NATIVE:
                            block[j] = resize_rgb(_image(b[slot]), target)
                out.write(s, block)
        finally:
            out.close()
        del a, b
    for leftover in (tfile, nfile):
        if leftover.exists():
            leftover.unlink()
    return final


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
