"""Decoding any common image file into 8-bit RGB, the single definition shared by training and device.

Modes that would otherwise crash a pipeline (grayscale, RGBA, palette, 16-bit, CMYK) are converted
rather than rejected; transparent pixels are composited over white, as an image viewer shows them.
"""
from __future__ import annotations

import functools
import io
import os
import zlib
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import png_strips
from .errors import ImageError
from .files import read_capped

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# Pillow refuses images above ~179 Mpx as a decompression bomb; a camera image is far below that.
Image.MAX_IMAGE_PIXELS = 180_000_000
# The largest image file read (a 50-megapixel JPEG is about 25 MB); bigger is refused before decoding.
IMAGE_FILE_LIMIT = 64 << 20

_WIDE_INT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, scaling wide integer modes down to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_INT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit files use the full 0..65535 range; mode "I" may hold either, so look at the data.
        top = 65535.0 if img.mode != "I" or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(source: ImageSource, target_size: Optional[Tuple[int, int]] = None,
             name: Optional[str] = None, budget: Optional[int] = None) -> Image.Image:
    """Decode `source` (path, bytes or PIL image) into an RGB PIL image with EXIF rotation applied.

    A path is read only if it is a regular file (a FIFO, socket or device is refused before it is opened, so
    it cannot hang the caller) of at most IMAGE_FILE_LIMIT (64 MB).

    `target_size` (height, width) lets large JPEGs decode at a reduced DCT scale, which is much
    cheaper for a 12-megapixel photo; the result is never smaller than the target. With a `budget`
    (bytes) too, an image whose decode would take more (decode_cost) is decoded within it, or refused with
    ImageError: a PNG in strips, box-reduced to >= 3x the target (png_strips.py); a JPEG at its reduced
    scale (refused if even that is too big); other formats are refused.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    data = None
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            if isinstance(source, (bytes, bytearray)):
                data = bytes(source)
            else:
                data = read_capped(source, IMAGE_FILE_LIMIT, ImageError, "file")
            if budget is not None:
                budget -= len(data)  # the file's bytes stay in memory while it decodes
            img = Image.open(io.BytesIO(data))
            if budget is not None and target_size is not None and img.format == "PNG" \
                    and decode_cost(img) > budget and png_strips.unsupported(img) is None:
                return _png_in_strips(img, data, target_size, budget, label)
            coefficients = _progressive_jpeg_cost(img)
            if target_size is not None and img.format == "JPEG":
                img.draft("RGB", (target_size[1], target_size[0]))
            if budget is not None and decode_cost(img) + coefficients > budget:
                raise ImageError(f"{label}: a {img.size[0]}x{img.size[1]} {img.format or ''} image needs about "
                                 f"{(decode_cost(img) + coefficients) >> 20} MB to decode, over the "
                                 f"{budget >> 20} MB allowed (edge-run --max-memory).")
            img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file.") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image file.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a recognised image file (corrupt or another format).") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image too large to decode safely (over 180 megapixels).") from None
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise ImageError(f"{label}: cannot decode image ({str(exc).strip() or type(exc).__name__}).") from None


def decode_cost(img: Image.Image) -> int:
    """Bytes a full decode of this opened image takes at its current (drafted) size, with the RGB copy, alpha
    compositing and EXIF rotation after it; what the budget is checked against."""
    w, h = img.size
    native = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    return w * h * (native + 8 + (8 if alpha else 0))


def _progressive_jpeg_cost(img: Image.Image) -> int:
    # libjpeg keeps every DCT coefficient of a progressive JPEG (2 bytes each, full resolution, whatever the
    # draft scale) until the last scan
    if img.format != "JPEG" or not img.info.get("progressive"):
        return 0
    return img.size[0] * img.size[1] * 2 * len(img.getbands())


def _png_in_strips(img: Image.Image, data: bytes, target_size: Tuple[int, int], budget: int,
                   label: str) -> Image.Image:
    need = png_strips.strip_cost(img, target_size)
    if need > budget:
        raise ImageError(f"{label}: a {img.size[0]}x{img.size[1]} PNG needs about {need >> 20} MB even decoded in "
                         f"strips for a {target_size[1]}x{target_size[0]} model, over the {budget >> 20} MB allowed "
                         "(edge-run --max-memory).")
    return png_strips.decode(data, img, target_size, _to_rgb, label)


def resize_rgb(img: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to (height, width) with bilinear filtering; returns uint8 HxWx3."""
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def is_enlargement(width: int, height: int, size: Tuple[int, int]) -> bool:
    """An image no larger than the model input on either side (CIFAR's 32 px into a 96 px model)."""
    return (width, height) != (size[1], size[0]) and width <= size[1] and height <= size[0]


@functools.lru_cache(maxsize=32)
def _half_pixel_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower/upper source index and float32 weight per output index, computed as TensorFlow's CPU kernel
    does (resize_bilinear_op.cc, HalfPixelScaler: in = (i + 0.5f) * scale - 0.5f, all float32)."""
    scale = np.float32(n_in) / np.float32(n_out)
    pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(pos).astype(np.int64), n_in - 1)
    return lower, upper, (pos - floor).astype(np.float32)


def enlarge(pixels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) → float32 (height, width, 3): bilinear with half-pixel centres, kept in float.

    Training enlarges small images this way inside its pipeline (tf.image.resize); this is the same
    arithmetic in the same order (top = tl + (tr - tl) * x_lerp, likewise bottom, then
    top + (bottom - top) * y_lerp, in float32), so the device feeds the model bit for bit the input
    convert validated it on. Rounding to uint8 instead (Pillow) moves pixels by up to half a step, and
    for a [-1, 1] model quantized with zero point 127 many enlarged pixels sit exactly on a rounding tie.
    """
    height, width = size
    y0, y1, ylerp = _half_pixel_taps(pixels.shape[0], height)
    x0, x1, xlerp = _half_pixel_taps(pixels.shape[1], width)
    src = pixels.astype(np.float32)
    left, right = src[:, x0], src[:, x1]
    rows = left + (right - left) * xlerp[None, :, None]  # each source row lerped along x once, then shared
    top, bottom = rows[y0], rows[y1]
    return top + (bottom - top) * ylerp[:, None, None]
