"""uint8 pixels → an integer model's input, through one 256-entry table per model channel.

Normalising then quantizing maps each pixel value of a channel to one integer, so the Classifier
computes the table once through exactly that float path (`run`'s arithmetic) and `predict` looks
pixels up instead: the same values without the float detour, rounding ties aside (snap_to_clip). Common
tables have cheaper exact equivalents (a copy, a flipped top bit, a clip, a byte translation), picked once
at load time.

Speed matters here because `fill` runs right after the previous invoke(), when the model has evicted the
caches: measured on MobileNetV2-96 int8, a byte translation of the frame costs 30-40 µs there (3 % of the
invoke), a clip against a frame-sized bound array 3 µs; a clip against a scalar bound 20 µs, because
numpy's scalar-broadcast min/max loop for uint8 is not vectorised.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# Pillow's own RGB → L weights (ITU-R 601-2 luma, 16-bit fixed point), for 1-channel models.
_LUMA = np.array([19595, 38470, 7471], np.uint32)
_TOP_BIT = np.uint8(0x80)


class PixelTable:
    """(C, 256) model input per pixel value and model channel; `fill` writes a batch of frames through it."""

    def __init__(self, table: np.ndarray, bgr: bool = False) -> None:
        self.table = np.ascontiguousarray(table)
        self.bgr = bgr
        self.kind = table_kind(self.table)
        # bytes.translate is CPython's C loop over a 256-byte table: no index widening, half np.take's time
        self._bytes = self.table[0].view(np.uint8).tobytes() if self.table.itemsize == 1 else None
        self._clip = clip_range(self.table)
        self._bounds: dict = {}  # (shape, bound) → a frame-sized array of it: the vectorised min/max loop

    def fill(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """out (N, H, W, C) in the model's input dtype ← pixels (N, H, W, 3) uint8."""
        if out.shape[-1] == 1:
            np.take(self.table[0], luma(pixels), out=out[..., 0])
            return
        kind = self.kind  # every kind but None is one table for all channels: channel order does not matter
        if kind in ("identity", "minus128", "clip"):
            self._clip_fill(pixels, out)
        elif kind == "shared" and self._bytes is not None and out.flags.c_contiguous:
            # tobytes() is C order whatever the frame's strides; the memoryview write is a plain memcpy
            memoryview(out).cast("B")[:] = pixels.tobytes().translate(self._bytes)
        elif kind == "shared":
            _take(self.table[0], pixels, out)
        else:
            for k in range(3):
                _take(self.table[k], pixels[..., 2 - k if self.bgr else k], out[..., k])

    def _clip_fill(self, pixels: np.ndarray, out: np.ndarray) -> None:
        # One ufunc pass per bound straight from the frame into the engine's buffer, no temporaries.
        lo, hi, flip = self._clip
        raw = out.view(np.uint8) if out.dtype != np.uint8 else out
        src = pixels
        if hi < 255:
            np.minimum(src, self._bound(raw.shape, hi), out=raw)
            src = raw
        if lo > 0:
            np.maximum(src, self._bound(raw.shape, lo), out=raw)
            src = raw
        if flip:
            np.bitwise_xor(src, _TOP_BIT, out=raw)  # xor's scalar loop is vectorised
        elif src is pixels:
            np.copyto(raw, pixels)

    def _bound(self, shape: Tuple[int, ...], value: np.uint8) -> np.ndarray:
        key = (shape, int(value))
        arr = self._bounds.get(key)
        if arr is None:
            if len(self._bounds) > 8:  # a caller cycling through batch sizes must not grow this forever
                self._bounds.clear()
            arr = self._bounds[key] = np.full(shape, value, np.uint8)
        return arr


def table_kind(table: Optional[np.ndarray]) -> Optional[str]:
    """Tables with a cheaper equivalent than a lookup: identity, pixel - 128, pixels clipped to a range
    (then perhaps - 128), or one table for all channels."""
    if table is None or not (table == table[0]).all():
        return None
    clip = clip_range(table)
    if clip is None:
        return "shared"
    lo, hi, flip = clip
    if (lo, hi) == (0, 255):
        return "minus128" if flip else "identity"
    return "clip"


def clip_range(table: np.ndarray) -> Optional[Tuple[np.uint8, np.uint8, bool]]:
    """(lo, hi, flip) when every channel's table is clip(pixel, lo, hi), minus 128 if `flip` (int8 input).

    [-1, 1] models quantized into uint8 come out as clip(pixel, 0, 254) once their ties are settled
    (snap_to_clip): one np.minimum instead of a lookup.
    """
    if table.dtype not in (np.uint8, np.int8) or not (table == table[0]).all():
        return None
    clip, lo, hi = _spanning_clip(table)
    if not (table[0] == clip).all():
        return None
    return np.uint8(lo), np.uint8(hi), table.dtype == np.int8


def snap_to_clip(table: np.ndarray, exact: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """`table` with its rounding ties settled towards a clip: clip(pixel, lo, hi), minus 128 for int8, when
    that is within half a step (plus float32 noise, `tolerance`) of `exact` for every entry, else `table`.

    `exact` is the unrounded quantized input per channel and pixel value. Ties are common: MobileNetV2's
    [-1, 1] into uint8 (scale 2/255, zero point 127) puts every pixel at p - 0.5 exactly, so float32
    noise decides between p and p - 1 and the table comes out a scatter of both, which only a lookup can
    apply. min(pixel, 254) is as near to every exact value and applies as one vectorised ufunc.
    """
    if table.dtype not in (np.uint8, np.int8):
        return table
    candidate = _spanning_clip(table)[0]
    limits = np.iinfo(table.dtype)
    target = np.clip(exact, limits.min, limits.max)
    if np.all(np.abs(candidate[None, :] - target) <= 0.5 + tolerance):
        return np.ascontiguousarray(np.broadcast_to(candidate.astype(table.dtype), table.shape))
    return table


def _spanning_clip(table: np.ndarray) -> Tuple[np.ndarray, int, int]:
    """clip(pixel, lo, hi) over the 256 levels (minus 128 for int8 tables, as int64) with [lo, hi] the range
    the 8-bit `table` spans in pixel units, and lo, hi."""
    shift = 128 if table.dtype == np.int8 else 0
    as_pixels = table.astype(np.int64) + shift
    lo, hi = int(as_pixels.min()), int(as_pixels.max())
    return np.clip(np.arange(256), lo, hi) - shift, lo, hi


def _take(table: np.ndarray, pixels: np.ndarray, out: np.ndarray, chunk: int = 4096) -> None:
    """out = table[pixels], a slice at a time: np.take widens indices to int64 (8x the frame), and a whole
    frame of those evicts the model's weights from the cache right before invoke() needs them."""
    if not pixels.flags.c_contiguous or not out.flags.c_contiguous:  # per-channel views: small strided takes
        np.take(table, pixels, out=out, mode="clip")
        return
    flat_in, flat_out = pixels.reshape(-1), out.reshape(-1)
    for i in range(0, flat_in.size, chunk):
        np.take(table, flat_in[i:i + chunk], out=flat_out[i:i + chunk], mode="clip")


def luma(pixels: np.ndarray) -> np.ndarray:
    """Pillow's RGB → L conversion; enlarged (float) images get the same weights, unrounded."""
    if pixels.dtype != np.uint8:
        return pixels @ (_LUMA / 65536.0).astype(np.float32)
    return (pixels.astype(np.uint32) @ _LUMA + 0x8000) >> 16
