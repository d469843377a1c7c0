"""The labels and preprocessing written into a .tflite file's metadata, so that a lone model file still knows them
(edgekit_runtime.tflite_meta reads them back)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List

import numpy as np

from edgekit_runtime.artifacts import METADATA_NAME
from edgekit_runtime.native import first_line

if TYPE_CHECKING:
    from edgekit.convert.context import ExportContext


def with_metadata(blob: bytes, ctx: "ExportContext", notes: List[str]) -> bytes:
    """The model with its labels and preprocessing embedded (a note instead when that fails)."""
    try:
        meta = ctx.metadata()
        if ctx.onnx_source is not None:  # onnx2tf made it channels-last, whatever the ONNX model's layout
            meta["preprocess"] = {**meta["preprocess"], "layout": "NHWC"}
        return embed_metadata(blob, meta)
    except Exception as exc:  # the artifact is still good without its metadata; say so in the manifest
        notes.append(f"metadata not embedded ({type(exc).__name__}: {first_line(exc, 100)})")
        return blob


def _aligned_buffer_class():
    from tensorflow.lite.python import schema_py_generated as schema

    class AlignedBufferT(schema.BufferT):
        """BufferT that honours schema.fbs' `data:[ubyte] (force_align: 16)`, which the Python object API ignores."""

        def Pack(self, builder):  # noqa: N802 (flatbuffers naming)
            data = None
            if self.data is not None:
                raw = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head -= len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)  # EndVector(n) is deprecated in flatbuffers 2+
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def embed_metadata(blob: bytes, payload: Dict[str, Any], name: str = METADATA_NAME) -> bytes:
    """The same model with Model.metadata[name] = JSON payload (replacing an earlier entry of that name)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    aligned = _aligned_buffer_class()
    for buf in model.buffers:
        buf.__class__ = aligned
    model.metadata = [m for m in (model.metadata or []) if _name(m) != name]
    entry = aligned()
    entry.data = np.frombuffer(json.dumps(payload, separators=(",", ":")).encode("utf-8"), np.uint8)
    model.buffers.append(entry)
    meta = schema.MetadataT()
    meta.name, meta.buffer = name, len(model.buffers) - 1
    model.metadata.append(meta)
    builder = flatbuffers.Builder(len(blob) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(meta) -> str:
    n = meta.name
    return n.decode("utf-8", "replace") if isinstance(n, (bytes, bytearray)) else str(n)
