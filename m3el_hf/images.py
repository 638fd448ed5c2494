"""Images as every part of the package sees them: identity, orientation, 8-bit conversion and resizing.

One rule for every path (prepare, the training collator, the evaluator, and stock ``datasets`` reading a
prepared folder):

- **Orientation**: an EXIF Orientation tag is applied, as ``datasets.Image`` decoding does
  (`PIL.ImageOps.exif_transpose`); a re-encoded image is stored upright, without the tag.
- **Modes**: prepare stores only modes that every reader turns into the same RGB pixels (`STORED_MODES`).
  Any other mode is converted by `to_8bit`, which *scales* high bit depths to 8 bits, never clips them:
  ``I;16*`` by 255/65535; ``I`` and ``F`` by the 16-bit range (``I``) or [0, 1] (``F``) when the values
  fit it, else by the image's own minimum and maximum; CMYK, LAB, YCbCr and HSV by PIL's conversion.
- **RGB**: transparency is composited onto white, as transformers' ``convert_to_rgb`` does (`to_rgb`).
- **Identity**: an undecoded image is known by a digest of its bytes (`content_key`), and its bytes are what
  the fast decoding paths take (`encoded_or_open`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = [
    "JPEG_QUALITY",
    "STORED_MODES",
    "ImageInputError",
    "content_key",
    "decode_for_resizing",
    "decode_plain_jpeg",
    "default_max_pixels",
    "encode",
    "encoded_or_open",
    "jpeg_may_rotate",
    "load_user_image",
    "open_image",
    "plain_jpeg_size",
    "shrink_to_shorter_side",
    "to_8bit",
    "to_rgb",
]

STORED_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
"""Modes stored as they are: stock readers and this package turn them into the same RGB pixels."""

JPEG_QUALITY = 95
"""Quality of every JPEG that prepare writes (re-encoded images without transparency)."""


def default_max_pixels() -> int:
    """PIL's decompression-bomb limit in this process (``PIL.Image.MAX_IMAGE_PIXELS``): what stock readers allow."""
    return int(PIL.Image.MAX_IMAGE_PIXELS or 0)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """``(marker, position)`` of each segment of a JPEG before its first scan; raises `OSError` on a broken one."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:  # extraneous bytes between segments: libjpeg (and PIL) skip them
            position = data.find(b"\xff", position)
            if position < 0:
                raise OSError("JPEG file has no frame header")
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker == 0xDA:  # start of scan: the compressed data follows
            return
        yield marker, position
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]


def jpeg_may_rotate(data: bytes) -> bool:
    """Whether a JPEG holds an APP1 segment (EXIF or XMP, whose orientation PIL and `datasets` apply), or cannot
    be told; False for a JPEG without one and for anything that is not a JPEG.

    The collator asks this of every JPEG before decoding it straight into an array: walking the segments takes
    5.5 µs, PIL's lazy open 40-48 µs, against 147 µs to decode a 224 px JPEG (benchmarks/README.md).
    """
    if data[:3] != b"\xff\xd8\xff":
        return False
    try:
        return any(marker == 0xE1 for marker, _ in _jpeg_segments(data))
    except (OSError, struct.error):
        return True  # unknown: let PIL decode it


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG that libjpeg-turbo decodes straight into the RGB pixels PIL gives (`simplejpeg`
    with PIL's settings: YCbCr, greyscale or RGB, no APP1 segment, so no orientation), from its header; None for
    any other image, or a header `simplejpeg` cannot read."""
    if data[:3] != b"\xff\xd8\xff" or jpeg_may_rotate(data):
        return None
    import simplejpeg

    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # PIL names the fault
    return (width, height) if colorspace in ("YCbCr", "Gray", "RGB") else None


def decode_plain_jpeg(data: bytes) -> np.ndarray | None:
    """The `(H, W, 3)` uint8 RGB pixels of a JPEG `plain_jpeg_size` takes, equal to PIL's (`simplejpeg` with PIL's
    settings: accurate DCT, smooth upsampling); None when it refuses the file (e.g. a scan cut short, which PIL
    decodes as far as it goes or names the fault of)."""
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
    except ValueError:
        return None


def content_key(image: bytes | PIL.Image.Image | Mapping[str, Any]) -> str | None:
    """An image's identity by content: the SHA-256 of its encoded bytes, in hex (2.5x blake2b's speed where the
    CPU has SHA instructions); of a decoded picture, of its mode, size and pixels; for an undecoded
    ``{"bytes", "path"}`` value without bytes, its path (None without one)."""
    if isinstance(image, PIL.Image.Image):
        digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest()
    return hashlib.sha256(image["bytes"]).hexdigest() if image.get("bytes") else image.get("path")


def encoded_or_open(value: Mapping[str, Any]) -> bytes | PIL.Image.Image:
    """What the fast decoding paths take from an undecoded ``{"bytes", "path"}`` value: its encoded bytes, or,
    when it has none, the image decoded from its path (`open_image`)."""
    return value["bytes"] if value.get("bytes") is not None else open_image(value)


def open_image(value: bytes | Mapping[str, Any]) -> PIL.Image.Image:
    """Decode an image (bytes, or an undecoded ``{"bytes", "path"}`` value) exactly as ``datasets.Image`` does.

    It is the same call: loaded, EXIF orientation applied, mode kept.
    """
    value = {"bytes": value, "path": None} if isinstance(value, bytes) else dict(value)
    return _datasets_image().decode_example(value)


@functools.cache
def _datasets_image() -> Any:
    from datasets import Image

    return Image()


def to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """`image` in one of `STORED_MODES`, high bit depths scaled (see the module's rule), other modes converted."""
    mode = image.mode
    if mode in STORED_MODES:
        return image
    if mode.startswith("I;16"):  # round(v * 255 / 65535) in integers: v / 257 is never halfway
        return PIL.Image.fromarray(((np.asarray(image, dtype=np.uint32) + 128) // 257).astype(np.uint8), mode="L")
    if mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode == "I" else 1.0
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, top)
        if low < 0 or high > top:
            return _scaled(values, high - low, low)
        return _scaled(values, top, 0.0)
    if mode in ("PA", "La", "RGBa"):
        return image.convert("RGBA" if mode != "La" else "LA")
    return image.convert("RGB")


def _scaled(values: np.ndarray, span: float, low: float) -> PIL.Image.Image:
    scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
    return PIL.Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), mode="L")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """`image` as 8-bit RGB: `to_8bit`, then transparency onto white, as transformers' ``convert_to_rgb`` does."""
    image = to_8bit(image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, image).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_for_resizing(image: bytes | PIL.Image.Image, draft_shorter: int | None = None) -> PIL.Image.Image:
    """Decode `image` (encoded bytes, or a file PIL has opened and not loaded) upright, in 8 bits and in a mode
    PIL resizes with any filter (not 1 or P).

    With `draft_shorter`, a JPEG is decoded at a reduced scale (PIL's draft mode: a power-of-two DCT scaling)
    whose shorter side is no less than it.
    """
    if isinstance(image, bytes):
        with PIL.Image.open(io.BytesIO(image)) as opened:
            return decode_for_resizing(opened, draft_shorter)
    shorter = min(image.size)
    if draft_shorter and image.format == "JPEG" and shorter > draft_shorter:
        scale = draft_shorter / shorter
        image.draft(image.mode, (round(image.width * scale), round(image.height * scale)))
    image.load()
    upright = to_8bit(PIL.ImageOps.exif_transpose(image))
    if upright.mode in ("1", "P"):  # PIL resizes these with the nearest neighbour only
        has_alpha = upright.info.get("transparency") is not None
        upright = upright.convert("RGBA" if has_alpha else ("L" if upright.mode == "1" else "RGB"))
    return upright


def shrink_to_shorter_side(
    image: bytes | PIL.Image.Image, size: int, resample: int = PIL.Image.Resampling.BICUBIC
) -> PIL.Image.Image:
    """Decode `image` (as `decode_for_resizing` takes it) upright and in 8 bits, then resize it so that its
    shorter side is `size` (never enlarged).

    A JPEG is decoded at a reduced scale first, to no less than twice the target size, as
    `PIL.Image.Image.thumbnail` does; the bicubic resize from there differs from one from the full image by
    under 1.5 grey levels on average on the bundled real photos (tested).
    """
    upright = decode_for_resizing(image, draft_shorter=2 * size)
    shorter = min(upright.size)
    if shorter <= size:
        return upright
    target = tuple(size if side == shorter else round(side * size / shorter) for side in upright.size)
    return upright.resize(target, resample=resample, reducing_gap=None)


def encode(image: PIL.Image.Image) -> bytes:
    """`image` (one of `STORED_MODES`) as PNG when it has transparency, else as JPEG at `JPEG_QUALITY`."""
    out = io.BytesIO()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image.save(out, format="PNG")
    else:
        image.convert("L" if image.mode in ("1", "L") else "RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class ImageInputError(ValueError):
    """A user's picture that cannot be used: missing, empty, not an image, cut short, or over the pixel limit.

    The message is one line naming the picture and what is wrong; being a `ValueError`, the ``m3el-hf``
    commands report it on stderr and exit with status 2.
    """


def load_user_image(
    image: PIL.Image.Image | bytes | str | os.PathLike[str] | Mapping[str, Any],
    max_pixels: int | None = None,
    name: str | None = None,
) -> PIL.Image.Image:
    """A picture a user gives (``m3el-hf link --image``, `EntityLinker.link(image=...)`, the app's upload), checked
    and decoded by the rule prepare applies to a release's images.

    Its size is read from its header first, so a picture of more than `max_pixels` pixels (default, and as
    prepare's ``--max-pixels``: PIL's decompression-bomb limit) is refused before anything decodes it; it is then
    decoded as `open_image` decodes (EXIF orientation applied, mode kept), so a file cut short is refused too.

    Args:
        image: A decoded PIL image (only its size is checked), encoded bytes, a file path, or an undecoded
            ``{"bytes", "path"}`` value.
        max_pixels (`int`, *optional*): Most pixels the picture may have.
        name (`str`, *optional*): How messages name the picture (default: its path, or "the image").

    Raises:
        `ImageInputError`: The picture cannot be used; the message says why.
    """
    limit = max_pixels or default_max_pixels()
    if isinstance(image, PIL.Image.Image):
        _check_pixels(image.size, limit, name or "the image")
        return image
    data, label = _user_image_bytes(image, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # compared with `limit` below
        try:
            with PIL.Image.open(io.BytesIO(data)) as opened:
                size = opened.size
        except PIL.UnidentifiedImageError:
            raise ImageInputError(f"{label} is not an image (no format PIL reads).") from None
        except PIL.Image.DecompressionBombError as error:
            raise ImageInputError(f"{label} is too large: {error}") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise _undecodable(label, error) from None
    _check_pixels(size, limit, label)
    try:
        return open_image(data)
    except (OSError, SyntaxError, ValueError) as error:
        raise _undecodable(label, error) from None


def _undecodable(label: str, error: Exception) -> ImageInputError:
    return ImageInputError(f"{label} cannot be decoded ({error}); is the file cut short?")


def _user_image_bytes(image: bytes | str | os.PathLike[str] | Mapping[str, Any], name: str | None) -> tuple[bytes, str]:
    """The encoded bytes of `image`, read from its file where it is one, and how messages name it."""
    if isinstance(image, Mapping):
        if image.get("bytes") is not None:
            return _user_image_bytes(image["bytes"], name or image.get("path"))
        image = image.get("path") or ""
    if isinstance(image, bytes):
        data, label = image, name or "the image"
    else:
        label = name or str(image)
        try:
            data = Path(image).read_bytes()
        except OSError as error:
            raise ImageInputError(f"{label} cannot be read ({error.strerror or error}).") from None
    if not data:
        raise ImageInputError(f"{label} is empty (0 bytes), not an image.")
    return data, label


def _check_pixels(size: tuple[int, int], limit: int, label: str) -> None:
    width, height = size
    if width * height > limit:
        raise ImageInputError(
            f"{label} is too large: {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(--max-pixels)."
        )
