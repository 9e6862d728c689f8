"""The one image decoder: every PIL mode to the same RGB/grey uint8, 16-bit scaled, EXIF applied,
decompression bombs refused by name."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from catpose.data.images import MAX_PIXELS, decode_grey, decode_mask, decode_raw, decode_rgb
from catpose.errors import DataFormatError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)


def _bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_and_rgba_and_palette_frames():
    assert np.array_equal(decode_rgb(_bytes(Image.fromarray(RGB)), "f.png"), RGB)
    rgba = np.concatenate([RGB, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_rgb(_bytes(Image.fromarray(rgba, "RGBA")), "f.png"), RGB)  # alpha dropped
    pal = Image.fromarray(RGB).quantize(16)
    want = np.asarray(pal.convert("RGB"))
    assert np.array_equal(decode_rgb(_bytes(pal), "f.png"), want)


def test_grey_and_grey_alpha_frames_and_masks():
    g = decode_rgb(_bytes(Image.fromarray(GREY, "L")), "f.png")
    assert g.shape == (6, 5, 3) and all(np.array_equal(g[..., c], GREY) for c in range(3))
    la = Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(255 - GREY)])
    assert np.array_equal(decode_rgb(_bytes(la), "f.png")[..., 0], GREY)
    assert np.array_equal(decode_grey(_bytes(la), "m.png"), GREY)
    m = decode_mask(_bytes(Image.fromarray(GREY, "L")), "m.png")
    assert m.dtype == np.float32 and np.allclose(m, GREY / 255.0)


def test_16_bit_frames_and_masks_are_scaled_not_clipped():
    g16 = (GREY.astype(np.uint16) * 256 + 100).astype(np.uint16)  # 8-bit value v -> 256 v + 100
    data = _bytes(Image.fromarray(g16))  # a 16-bit grey PNG
    assert decode_raw(data, "d.png").max() == g16.max()  # depth maps keep their 16 bits
    rgb = decode_rgb(data, "f.png")
    assert np.array_equal(rgb[..., 1], GREY)  # (256 v + 100) >> 8 == v
    assert np.array_equal(decode_grey(data, "m.png"), GREY)
    assert rgb.max() < 255 or GREY.max() == 255  # not the all-white frame of before


def test_exif_orientation_is_applied():
    im = Image.fromarray(RGB)  # (6, 5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _bytes(im, "JPEG", exif=exif.tobytes(), quality=100)
    out = decode_rgb(data, "f.jpg")
    assert out.shape == (5, 6, 3)
    plain = decode_rgb(_bytes(im, "JPEG", quality=100), "f.jpg")
    assert np.abs(out.astype(int) - np.rot90(plain, -1).astype(int)).mean() < 2


def _png_declaring(w: int, h: int) -> bytes:
    """A real PNG whose IHDR declares w x h 8-bit grey pixels (with one tiny IDAT; never decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("decode", [decode_rgb, decode_grey, decode_raw])
def test_a_decompression_bomb_fails_that_file_by_name(decode):
    with pytest.raises(DataFormatError, match=r"bomb\.png: image declares .*decompression bomb"):
        decode(_png_declaring(40000, 40000), "/data/car/seq/images/bomb.png")
    side = int(MAX_PIXELS**0.5) + 1  # just over the limit (under PIL's error threshold): refused as well
    with pytest.raises(DataFormatError, match="bomb"):
        decode(_png_declaring(side, side), "bomb.png")


def test_truncated_and_foreign_bytes_are_named():
    data = _bytes(Image.fromarray(RGB))
    for bad in (data[: len(data) // 2], b"not an image"):
        with pytest.raises(DataFormatError, match=r"^x\.png: cannot decode image"):
            decode_rgb(bad, "x.png")
