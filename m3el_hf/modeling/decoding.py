"""Decoding encoded JPEGs and PNGs straight into uint8 RGB arrays, with the pixels that PIL gives.

`FastImagePreprocessor` takes an image's bytes here first. A JPEG is decoded by libjpeg-turbo (`simplejpeg`, with
PIL's settings: accurate DCT, smooth upsampling) and a PNG by libspng (`pyspng`); both give the pixels of
``to_rgb(open_image(data))`` (tested on the bundled real photos), without PIL's per-image overhead. Only files
whose pixels cannot differ take this path: a JPEG without an APP1 segment (EXIF or XMP, which may turn the
picture) in YCbCr, RGB or greyscale; an 8-bit greyscale, RGB or RGBA PNG whose chunks are all in
`_PNG_CHUNKS` (no transparency chunk, no EXIF, no text that may hold an orientation). Any other file, one over
PIL's decompression-bomb limit, and one a decoder refuses go to PIL, which decodes it or names the fault.
"""

from __future__ import annotations

import struct

import numpy as np
import PIL.Image

from ..images import decode_plain_jpeg, default_max_pixels, plain_jpeg_size, to_rgb

__all__ = ["decode_rgb", "direct_size"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change no pixel that PIL or libspng (as pyspng calls it: no gamma, no sBIT scaling) returns.
_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"tIME"})
# PNG colour types (8-bit) the direct path takes: greyscale, RGB, RGBA.
_PNG_COLOUR_TYPES = frozenset({0, 2, 6})


def direct_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG or PNG that `decode_rgb` decodes directly, read from its header; None for
    any other file (see the module docstring)."""
    if data[:8] == _PNG_SIGNATURE:
        size = _png_size(data)
    else:
        size = plain_jpeg_size(data)
        size = None if size is None else size[::-1]
    if size is None or size[0] * size[1] > default_max_pixels():
        return None  # PIL refuses or warns of a decompression bomb: let it
    return size


def decode_rgb(data: bytes) -> np.ndarray | None:
    """The `(H, W, 3)` uint8 RGB pixels of a file `direct_size` takes, equal to ``to_rgb(open_image(data))``'s;
    None when the decoder refuses the file (e.g. one cut short, which PIL decodes as far as it goes)."""
    return _png_rgb(data) if data[:8] == _PNG_SIGNATURE else decode_plain_jpeg(data)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of an 8-bit, non-paletted PNG whose chunks are all in `_PNG_CHUNKS`, else None."""
    try:
        width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
        if data[12:16] != b"IHDR" or depth != 8 or colour not in _PNG_COLOUR_TYPES:
            return None
        position = 8
        while True:
            length, kind = struct.unpack_from(">I4s", data, position)
            if kind not in _PNG_CHUNKS:
                return None
            if kind == b"IEND":
                return height, width
            position += 12 + length
    except struct.error:
        return None  # cut short: PIL decodes what there is, or names the fault


def _png_rgb(data: bytes) -> np.ndarray | None:
    import pyspng

    try:
        array = pyspng.load(data)
    except (RuntimeError, ValueError):
        return None
    if array.ndim == 2:  # greyscale: PIL's L → RGB copies the value into each channel
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:  # transparency onto white, by the rule every other path follows
        return np.asarray(to_rgb(PIL.Image.fromarray(array)))
    return array
