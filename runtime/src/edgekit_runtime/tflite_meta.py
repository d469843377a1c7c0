"""Named metadata and associated files of a .tflite model, read without flatbuffers or TensorFlow.

A .tflite file is a flatbuffer (schema: tensorflow/compiler/mlir/lite/schema/schema.fbs). Only a
few fields are needed here, so a ~60-line reader replaces a dependency on the `flatbuffers` package
and on a generated schema module: Model.buffers (field 4), Model.metadata (field 6),
Metadata{name, buffer}, Buffer{data, offset, size}. The file is memory-mapped, so a 100 MB model
costs no more than the few pages holding the metadata.

Files attached the TFLite-Support way (a zip archive appended to the model, e.g. labels.txt) are
read with zipfile.
"""
from __future__ import annotations

import mmap
import os
import struct
import zipfile
from typing import Dict, Iterable, Optional

_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_META_NAME, _META_BUFFER = 0, 1
_BUF_DATA, _BUF_OFFSET, _BUF_SIZE = 0, 1, 2


class _Malformed(Exception):
    pass


class _FlatReader:
    def __init__(self, buf) -> None:
        self.buf = buf
        self.size = len(buf)

    def _unpack(self, fmt: str, pos: int):
        if pos < 0 or pos + struct.calcsize(fmt) > self.size:
            raise _Malformed(f"offset {pos} outside the file")
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def field(self, table: int, index: int) -> Optional[int]:
        """Absolute position of a table's field, or None when the field is absent (default value)."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vtable_size:
            return None
        rel = self._unpack("<H", vtable + slot)
        return table + rel if rel else None

    def deref(self, pos: int) -> int:
        return pos + self._unpack("<I", pos)

    def vector(self, pos: int):
        start = self.deref(pos)
        length = self._unpack("<I", start)
        if start + 4 + length > self.size:
            raise _Malformed("vector runs past the end of the file")
        return start + 4, length

    def table_at(self, vector_start: int, i: int) -> int:
        return self.deref(vector_start + 4 * i)

    def bytes_of(self, pos: int) -> bytes:
        start, length = self.vector(pos)
        return bytes(self.buf[start:start + length])

    def scalar(self, table: int, index: int, fmt: str, default=0):
        pos = self.field(table, index)
        return default if pos is None else self._unpack(fmt, pos)


def _buffer_bytes(reader: _FlatReader, buffers_start: int, n_buffers: int, index: int) -> Optional[bytes]:
    if not 0 <= index < n_buffers:
        return None
    table = reader.table_at(buffers_start, index)
    data = reader.field(table, _BUF_DATA)
    if data is not None:
        return reader.bytes_of(data)
    # Models over 2 GB keep buffer contents after the flatbuffer, addressed from the file start;
    # offset 1 is the converter's placeholder for "empty".
    offset = reader.scalar(table, _BUF_OFFSET, "<Q")
    size = reader.scalar(table, _BUF_SIZE, "<Q")
    if offset > 1 and size and offset + size <= reader.size:
        return bytes(reader.buf[offset:offset + size])
    return None


def read_metadata(path: "str | os.PathLike", names: Optional[Iterable[str]] = None) -> Dict[str, bytes]:
    """Model.metadata entries of a .tflite file as {name: bytes}, optionally only `names`.

    Returns {} for a file that is not a TFLite flatbuffer or whose metadata cannot be parsed: the
    interpreter is the judge of a model's validity, metadata is optional extra.
    """
    wanted = set(names) if names is not None else None
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if len(buf) < 8 or buf[4:8] != b"TFL3":
                return {}
            reader = _FlatReader(buf)
            model = reader.deref(0)
            meta_field = reader.field(model, _MODEL_METADATA)
            buffers_field = reader.field(model, _MODEL_BUFFERS)
            if meta_field is None or buffers_field is None:
                return {}
            meta_start, n_meta = reader.vector(meta_field)
            buffers_start, n_buffers = reader.vector(buffers_field)
            found: Dict[str, bytes] = {}
            for i in range(n_meta):
                entry = reader.table_at(meta_start, i)
                name_pos = reader.field(entry, _META_NAME)
                if name_pos is None:
                    continue
                name = reader.bytes_of(name_pos).decode("utf-8", "replace")
                if wanted is not None and name not in wanted:
                    continue
                data = _buffer_bytes(reader, buffers_start, n_buffers, reader.scalar(entry, _META_BUFFER, "<I"))
                if data is not None:
                    found[name] = data
            return found
    except (OSError, ValueError, _Malformed):
        return {}


def read_associated_files(path: "str | os.PathLike") -> Dict[str, bytes]:
    """Small files zipped onto the end of a .tflite (TFLite-Support metadata), as {name: bytes}."""
    try:
        if not zipfile.is_zipfile(path):
            return {}
        with zipfile.ZipFile(path) as archive:
            # Only small text-like attachments matter here; a huge member is not a label file.
            return {info.filename: archive.read(info) for info in archive.infolist()
                    if not info.is_dir() and info.file_size <= 4_000_000}
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError):
        return {}
