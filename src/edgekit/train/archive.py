"""Where each file of a .tar / .tar.gz / .tar.bz2 / .tar.xz lies in its uncompressed stream, found in one pass:
decoding needs every name before it starts (the rows are in name order), then reads the bytes in a second,
forward pass.

tarfile parses every header in Python (3.7 s of CIFAR-10's 60,000 members, before any decoding can start);
plain ustar / GNU / v7 headers, which is what archives of images hold, are read here from large blocks in a
tenth of that. Anything else (pax or GNU long-name headers, sparse files, base-256 sizes, a bad checksum, a
truncated archive) sends the whole archive through tarfile, which knows them all and says what is wrong.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import sys
import tarfile
from typing import BinaryIO, Callable, List, NamedTuple, Optional, Tuple

BLOCK = 512
_GNU_TYPES = (b"L", b"K", b"S")       # tarfile.GNU_TYPES: their prefix field is not part of the name
_PLAIN_FILES = (b"0", b"\0", b"7")    # regular (and contiguous) files
_NOT_FILES = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, FIFOs: no data to read


class Member(NamedTuple):
    name: str
    offset: int                 # of its bytes in the uncompressed stream
    size: int
    blob: Optional[bytes]       # its bytes, where the caller asked for them (or tarfile had to put them together)


def open_stream(path: str) -> BinaryIO:
    """The uncompressed byte stream of an archive, as tarfile's "r:*" reads it."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return bz2.open(path, "rb")
    if head == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def members(path: str, wanted: Callable[[str], bool]) -> List[Member]:
    """Every regular file of the archive, in archive order; `wanted(name)` says which come with their bytes.
    Raises tarfile.TarError, EOFError or OSError for an archive it cannot read."""
    with open_stream(path) as stream:
        found = _plain_headers(stream, wanted)
    if found is not None:
        return found
    out = []
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            if m.isfile():
                take = wanted(m.name) or m.issparse()  # a sparse file's bytes are not stored in one piece
                fh = tar.extractfile(m) if take else None
                out.append(Member(m.name, m.offset_data, m.size, (fh.read() if fh else b"") if take else None))
    return out


def _plain_headers(stream: BinaryIO, wanted: Callable[[str], bool]) -> Optional[List[Member]]:
    """members() for an archive of plain headers only, else None."""
    out: List[Member] = []
    buf, base, pos = bytearray(), 0, 0   # buf holds stream bytes base…; the next header is at pos

    def have(end: int) -> bool:
        nonlocal buf, base
        while base + len(buf) < end:
            more = stream.read(1 << 20)
            if not more:
                return False
            drop = min(pos - base, len(buf))  # what lies before the current header is never read again
            del buf[:drop]
            base += drop
            buf += more
        return True

    while True:
        if not have(pos + BLOCK):
            return None  # no end-of-archive block: truncated, or a form tarfile tolerates and explains
        h = bytes(buf[pos - base:pos - base + BLOCK])
        if h.count(0) == BLOCK:
            return out
        parsed = _header(h)
        if parsed is None:
            return None
        kind, name, size = parsed
        if kind in _PLAIN_FILES:
            blob = None
            if wanted(name):
                if not have(pos + BLOCK + size):
                    return None
                blob = bytes(buf[pos + BLOCK - base:pos + BLOCK - base + size])
            out.append(Member(name, pos + BLOCK, size, blob))
        elif kind not in _NOT_FILES:
            return None
        pos += BLOCK + -(-size // BLOCK) * BLOCK


def _header(h: bytes) -> Optional[Tuple[bytes, str, int]]:
    """(type, name, size) of a plain header, as tarfile.TarInfo.frombuf reads it; None for anything else."""
    try:
        stored = int(h[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        if h[124] & 0x80:
            return None   # base-256 size
        size = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    if stored != 256 + sum(h) - sum(h[148:156]):
        return None
    kind = h[156:157]
    enc = sys.getfilesystemencoding()
    name = h[:100].split(b"\0", 1)[0].decode(enc, "surrogateescape")
    prefix = h[345:500].split(b"\0", 1)[0].decode(enc, "surrogateescape")
    if kind == b"\0" and name.endswith("/"):
        kind = b"5"   # an old V7 directory
    if prefix and kind not in _GNU_TYPES:
        name = prefix + "/" + name
    return kind, name, size
