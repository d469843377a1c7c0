"""A PNG far larger than the model needs, decoded in horizontal strips with a bounded footprint.

Pillow decodes a PNG whole: a 13000x13000 image of 20 kB (a decompression bomb, yet under Pillow's
pixel cap) takes 676 MB as RGB, more than a 1 GB board can spare. Here the compressed stream is
inflated a strip of rows at a time; each strip is unfiltered by Pillow's own PNG ("zip") decoder,
brought to RGB exactly as a whole image would be (`to_rgb`: palette, transparency over white,
16-bit), box-reduced by an integer factor with Image.reduce and pasted into a small result. Strips
are whole multiples of the factor, so the result equals reducing the fully decoded image.

PNG filters predict each row from the one above it, so each strip's decode is primed with the last
row of the previous strip, unfiltered; to keep those bytes exact, the filters are undone in a
byte-preserving mode of the same pixel width (L, LA, RGB or RGBA) and the pixels unpacked after.
Interlaced, animated and 16-bit colour PNGs (6 or 8 bytes per pixel, no such Pillow mode) are not
handled here; the caller refuses them when they would not fit.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable, Iterator, List, Optional, Tuple

from PIL import Image

from .errors import ImageError

STRIP_PIXELS = 2_000_000   # pixels decoded per strip (fewer than one strip of `factor` rows is impossible)
REDUCING_GAP = 3           # the reduced image keeps >= 3x the model's size: Pillow's own "indistinguishable" gap
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}                     # PNG colour type -> samples per pixel
_FILTER_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}         # bytes per pixel -> a mode that keeps the bytes
# Pillow's PNG rawmodes -> bytes per pixel in the file
_RAW_BYTES = {"1": 1 / 8, "L;2": 1 / 4, "L;4": 1 / 2, "L": 1, "P;1": 1 / 8, "P;2": 1 / 4, "P;4": 1 / 2, "P": 1,
              "I;16B": 2, "LA": 2, "RGB": 3, "RGBA": 4, "LA;16B": 4, "RGB;16B": 6, "RGBA;16B": 8}
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def reduce_factor(size: Tuple[int, int], target: Tuple[int, int]) -> int:
    """The box-reduction factor for a (width, height) image and a (height, width) model input."""
    (w, h), (th, tw) = size, target
    return max(1, min(w // (REDUCING_GAP * tw), h // (REDUCING_GAP * th)))


def unsupported(img: Image.Image) -> Optional[str]:
    """Why this opened (not loaded) PNG cannot be decoded in strips, or None."""
    if img.info.get("interlace"):
        return "an interlaced PNG"
    if getattr(img, "is_animated", False):
        return "an animated PNG"
    tile = getattr(img, "tile", None) or []
    if len(tile) != 1 or tile[0][0] != "zip" or tuple(tile[0][1]) != (0, 0) + img.size:
        return "a PNG of an unusual layout"
    return None


def strip_cost(img: Image.Image, target: Tuple[int, int]) -> int:
    """Bytes decode() takes at most besides the file's: the reduced RGB result (and its rotation) and one strip
    in flight: its filtered bytes (inflated, compressed again, unfiltered, unpacked: ~4 copies), the unfiltered
    image, the strip in the file's mode and its conversion to RGB (16-bit goes through float64, alpha through
    a composite over white)."""
    w, h = img.size
    f = reduce_factor(img.size, target)
    rows = f * max(1, STRIP_PIXELS // (w * f))
    sample = _RAW_BYTES.get(_rawmode(img), 8.0)      # bytes per pixel in the file
    unfiltered = sample if sample <= 1 else 4.0      # an L image holds a byte per byte, LA/RGB/RGBA four per pixel
    native = {"1": 1, "L": 1, "P": 1, "I;16": 2}.get(img.mode, 4)
    alpha = img.mode in ("RGBA", "LA") or "transparency" in img.info
    convert = 14 if img.mode == "I;16" else 16 if alpha else 4
    return math.ceil(w / f) * math.ceil(h / f) * 8 + int(rows * w * (4 * sample + unfiltered + native + convert))


def decode(data: bytes, img: Image.Image, target: Tuple[int, int], to_rgb: Callable[[Image.Image], Image.Image],
           label: str) -> Image.Image:
    """The PNG in `data` (opened as `img`, not loaded) as an RGB image reduced by reduce_factor(), EXIF-rotated."""
    width, height = img.size
    bits, colour, chunks, exif = _chunks(data, label)
    channels, rawmode = _CHANNELS.get(colour), _rawmode(img)
    if channels is None or _RAW_BYTES.get(rawmode) != bits * channels / 8:
        raise ImageError(f"{label}: cannot decode image (PNG header: {bits}-bit colour type {colour}).")
    bpp = max(1, bits * channels // 8)
    if bpp not in _FILTER_MODES:
        raise ImageError(f"{label}: a {bits}-bit colour PNG this large cannot be decoded in strips.")
    stride = (width * bits * channels + 7) // 8
    f = reduce_factor(img.size, target)
    rows_per_strip = f * max(1, STRIP_PIXELS // (width * f))
    fmode = _FILTER_MODES[bpp]
    out = Image.new("RGB", (math.ceil(width / f), math.ceil(height / f)))
    carry = b""   # the previous strip's last row, unfiltered, behind a "no filter" byte
    y = 0
    for filtered in _rows(chunks, 1 + stride, rows_per_strip, height, label):
        n = len(filtered) // (1 + stride)
        m = n + (carry != b"")
        packer = zlib.compressobj(0)   # stored, not compressed: Pillow's decoder only inflates it again
        stream = packer.compress(carry) + packer.compress(filtered) + packer.flush()
        del filtered
        try:
            unfiltered = Image.frombytes(fmode, (stride // bpp, m), stream, "zip", fmode)
        except ValueError as exc:  # the decoder's "not enough image data", or a bad filter byte
            raise ImageError(f"{label}: cannot decode image ({exc}).") from None
        del stream
        raw = memoryview(unfiltered.tobytes("raw", fmode))[(m - n) * stride:]
        del unfiltered
        carry = b"\0" + bytes(raw[-stride:])
        strip = Image.frombytes(img.mode, (width, n), raw, "raw", rawmode)
        del raw
        if img.mode == "P" and img.palette is not None:
            strip.putpalette(img.palette)
        if "transparency" in img.info:
            strip.info["transparency"] = img.info["transparency"]
        strip = to_rgb(strip)
        out.paste(strip.reduce(f) if f > 1 else strip, (0, y // f))
        y += n
    orientation = _orientation(exif or img.info.get("exif"))
    return out.transpose(_ORIENTATION[orientation]) if orientation in _ORIENTATION else out


def _rawmode(img: Image.Image) -> str:
    args = img.tile[0][3] if getattr(img, "tile", None) else ""
    return args[0] if isinstance(args, tuple) else str(args)


def _chunks(data: bytes, label: str) -> Tuple[int, int, List[memoryview], Optional[bytes]]:
    """(bit depth, colour type, the IDAT payloads in order, an eXIf chunk's payload) of a PNG file's bytes."""
    view, pos, idat, exif, header = memoryview(data), 8, [], None, None
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8])
        payload = view[pos + 8:pos + 8 + length]
        if kind == b"IHDR" and header is None and len(payload) >= 13:
            header = (payload[8], payload[9])
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"eXIf":
            exif = bytes(payload)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ImageError(f"{label}: cannot decode image (a PNG without {'IHDR' if header is None else 'IDAT'}).")
    return header[0], header[1], idat, exif


def _rows(chunks: List[memoryview], row_bytes: int, rows_per_strip: int, height: int, label: str) -> Iterator[bytes]:
    """The inflated, still filtered rows, `rows_per_strip` at a time (the last strip may be shorter); inflating
    in pieces of at most 1 MB keeps a bomb's output bounded by one strip."""
    inflate, pending, done = zlib.decompressobj(), bytearray(), 0

    def inflated() -> Iterator[bytes]:
        for chunk in chunks:
            data = bytes(chunk)
            while data:
                yield inflate.decompress(data, 1 << 20)
                data = inflate.unconsumed_tail
        while not inflate.eof:  # output zlib holds after the last input (a long match in progress)
            more = inflate.decompress(b"", 1 << 20)
            if not more:
                return
            yield more

    try:
        for piece in inflated():
            pending += piece
            while done < height and len(pending) >= min(rows_per_strip, height - done) * row_bytes:
                n = min(rows_per_strip, height - done)
                strip = pending[:n * row_bytes]
                del pending[:n * row_bytes]
                done += n
                yield strip
            if done >= height:
                return
    except zlib.error as exc:
        raise ImageError(f"{label}: cannot decode image (corrupt PNG data: {exc}).") from None
    raise ImageError(f"{label}: cannot decode image (image file is truncated: "
                     f"{done + len(pending) // row_bytes} of {height} rows).")


def _orientation(exif: Optional[bytes]) -> int:
    if not exif:
        return 1
    try:
        info = Image.Exif()
        info.load(exif)
        value = info.get(0x0112, 1)
        return value if isinstance(value, int) else 1
    except Exception:  # a corrupt EXIF block is ignored, as a viewer does
        return 1
