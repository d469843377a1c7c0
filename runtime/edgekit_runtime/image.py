"""Decoding any common image file into 8-bit RGB, the single definition shared by training and device.

Modes that would otherwise crash a pipeline (grayscale, RGBA, palette, 16-bit, CMYK) are converted
rather than rejected; transparent pixels are composited over white, as an image viewer shows them.
"""
from __future__ import annotations

import functools
import io
import os
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# Pillow refuses images above ~179 Mpx as a decompression bomb; a camera image is far below that.
Image.MAX_IMAGE_PIXELS = 180_000_000

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
             name: Optional[str] = None) -> Image.Image:
    """Decode `source` (path, bytes or PIL image) into an RGB PIL image with EXIF rotation applied.

    `target_size` (height, width) lets large JPEGs decode at a reduced DCT scale, which is much
    cheaper for a 12-megapixel photo; the result is never smaller than the target.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            img = Image.open(fp)
            if target_size is not None and img.format == "JPEG":
                img.draft("RGB", (target_size[1], target_size[0]))
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
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: cannot decode image ({str(exc).strip() or type(exc).__name__}).") from None


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
def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of TensorFlow's bilinear resize with half-pixel centres."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    floor = np.floor(pos)
    lower = np.clip(floor, 0, n_in - 1).astype(np.int64)
    upper = np.clip(np.ceil(pos), 0, n_in - 1).astype(np.int64)
    frac = pos - floor
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lower), 1.0 - frac)
    np.add.at(w, (rows, upper), frac)
    return w.astype(np.float32)


def enlarge(pixels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) → float32 (height, width, 3): bilinear with half-pixel centres, kept in float.

    Training enlarges small images this way inside its pipeline (tf.image.resize); doing it here too,
    instead of Pillow's resize rounded back to uint8, gives the device the very input the model was
    validated on (rounding to uint8 moves a pixel by up to half a step, enough to flip a near tie).
    """
    height, width = size
    wy, wx = _bilinear_weights(pixels.shape[0], height), _bilinear_weights(pixels.shape[1], width)
    x = pixels.astype(np.float32)
    rows = np.einsum("oh,hwc->owc", wy, x)
    return np.einsum("pw,owc->opc", wx, rows)
