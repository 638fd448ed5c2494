"""Real-world image files for tests: encoded photos, EXIF-rotated JPEGs, decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib

import PIL.Image


def encoded(image: PIL.Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def bomb_png(side: int = 30_000) -> bytes:
    """A single-colour 1-bit PNG of side × side pixels, written chunk by chunk (never held as pixels)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rotated_jpeg(upright: PIL.Image.Image, orientation: int = 6) -> bytes:
    """`upright` stored rotated, with the EXIF Orientation tag that turns it back."""
    undo = {3: PIL.Image.Transpose.ROTATE_180, 6: PIL.Image.Transpose.ROTATE_90, 8: PIL.Image.Transpose.ROTATE_270}
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = orientation
    return encoded(upright.transpose(undo[orientation]), "JPEG", quality=95, exif=exif)
