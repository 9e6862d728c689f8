"""The one image decoder of every stage: frames to RGB uint8, masks to grey, depth maps raw.

PIL decodes; this module makes the result the same whatever the file's mode: 8- or 16-bit (16-bit
scaled to 8 bits by ``>> 8``, never clipped to white), grey, grey + alpha, RGB(A), palette, CMYK, with
the EXIF orientation applied (a phone photo shot upright stays upright). A header declaring more than
:data:`MAX_PIXELS` pixels (a decompression bomb) fails that file only, with a
:class:`~catpose.errors.DataFormatError` naming it, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catpose.errors import DataFormatError

MAX_PIXELS = 100_000_000
"""The most pixels an image may declare (10 000 × 10 000; a 48 MP phone photo fits): PIL's own
decompression-bomb limit is set to it, and its warning is an error here."""

Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open(data: bytes, path: str, max_pixels: int) -> Image.Image:
    """The decoded image (pixels loaded, EXIF orientation applied); errors name ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise DataFormatError(path, f"image declares {w} x {h} pixels, more than the limit of "
                                            f"{max_pixels} "
                                      "(a decompression bomb?); file skipped")
            im.load()
            return ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataFormatError(path, f"image declares more pixels than the limit of {max_pixels} (a "
                                    "decompression "
                              f"bomb? {e}); file skipped") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataFormatError(path, f"cannot decode image ({e})") from e


def _grey8(im: Image.Image) -> np.ndarray:
    """(H, W) uint8 of a one-channel image of any depth (16-bit scaled by ``>> 8``)."""
    if im.mode in _SIXTEEN_BIT:
        a = np.asarray(im).astype(np.int64)
        return (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
    if im.mode == "F":  # float: [0, 1] scaled, anything else clipped to [0, 255]
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    return np.asarray(im.convert("L"))


def _rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an image of any mode (alpha dropped, palette and CMYK converted)."""
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        return np.repeat(_grey8(im)[..., None], 3, axis=2)
    if im.mode == "LA":
        return np.repeat(np.asarray(im.getchannel("L"))[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def decode_rgb(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A frame: (H, W, 3) uint8 RGB whatever the file's mode; errors name ``path``."""
    return _rgb8(_open(data, path, max_pixels))


def decode_grey(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask (or grey frame): (H, W) uint8 (an RGB mask's luminance; an alpha channel is dropped)."""
    im = _open(data, path, max_pixels)
    if im.mode == "LA":
        return np.asarray(im.getchannel("L"))
    if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return np.asarray(_as_rgb_image(im).convert("L"))
    return _grey8(im)


def _as_rgb_image(im: Image.Image) -> Image.Image:
    return Image.fromarray(_rgb8(im))


def decode_mask(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask as (H, W) float32 foreground probability in [0, 1]."""
    return decode_grey(data, path, max_pixels).astype(np.float32) / 255.0


def decode_raw(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The pixels as stored (a depth map's 16 bits), with the same size limit and named errors."""
    return np.asarray(_open(data, path, max_pixels))


def image_size(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(H, W) as decoded (EXIF orientation applied)."""
    return tuple(decode_raw(data, path, max_pixels).shape[:2])  # type: ignore[return-value]


def decode_image(data: bytes, path: str, mode: str = "RGB") -> np.ndarray:
    """The decoder by PIL mode name, for the stages' callers: ``"RGB"`` (:func:`decode_rgb`), ``"L"``
    (:func:`decode_grey`), ``""`` (:func:`decode_raw`)."""
    if mode == "RGB":
        return decode_rgb(data, path)
    if mode == "L":
        return decode_grey(data, path)
    if not mode:
        return decode_raw(data, path)
    raise ValueError(f"mode must be 'RGB', 'L' or '', got {mode!r}")
