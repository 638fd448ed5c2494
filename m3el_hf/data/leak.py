"""The mention-image leak: whether a mention's picture is a copy or a near-duplicate of a candidate's.

The release stores a mention's image as the gold entity's image file, so wherever the two are one picture an
image task is solved by finding the duplicate, not by linking. Each instance gets two columns:

- ``mention_image_leak``: ``"copy"`` (the mention's image is byte-identical to the gold's), ``"near"`` (a
  near-duplicate of it: re-encoded, resized or slightly cropped) or ``"none"``; null when the instance has no
  mention image or its gold has none;
- ``mention_image_near_candidates``: the other candidates whose image is a copy or a near-duplicate of the
  mention's (a mislabel, or a picture that shows several candidates).

**Near-duplicate**: the 64-bit perceptual hash of ``imagehash.phash`` (DCT of a 32×32 greyscale thumbnail;
for the same decoded picture, imagehash's bit for bit, tested) on the upright picture, and on six crops of it
(5% and 10% off every side, 10% off one side). Two pictures are near-duplicates when the whole-picture hash of
one is within `NEAR_DISTANCE` bits of any hash of the other. The picture is the one decode prepare makes of
each image: an image stored as it is decoded small (JPEGs at a reduced DCT scale), a converted or resized one
as the picture it is stored as, before its encoding (`picture_fingerprint`).
Measured on the real photographs bundled with matplotlib and scikit-image: re-encoding, resizing and greyscale
conversion move the hash by at most 4 bits, crops of up to 5% a side by at most 12 (tested), and two different
photographs are at least 18 bits apart.
"""

from __future__ import annotations

import functools
import io
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageOps
import scipy.fftpack

from ..images import content_key, to_rgb

__all__ = [
    "NEAR_DISTANCE",
    "Fingerprinted",
    "LeakDetector",
    "fingerprint",
    "leak_columns",
    "picture_fingerprint",
]

NEAR_DISTANCE = 12
"""Most differing hash bits (of 64) between near-duplicates."""

# (left, top, right, bottom) fractions cut off: the whole picture first.
_CROPS = ((0, 0, 0, 0), (0.05,) * 4, (0.1,) * 4, (0.1, 0, 0, 0), (0, 0.1, 0, 0), (0, 0, 0.1, 0), (0, 0, 0, 0.1))
_THUMBNAIL = 32
_DECODE_AT_LEAST = 4 * _THUMBNAIL  # JPEGs are decoded at a reduced scale, to no less than this
_CROP_SOURCE = 4 * _THUMBNAIL  # pictures from this side up have their crops resampled by PIL


def fingerprint(image: bytes | PIL.Image.Image) -> np.ndarray:
    """The perceptual hashes of an encoded image, upright: uint64 `(7,)`, the whole picture first, then crops.

    `image` is the encoded bytes, or the file PIL has opened from them and not loaded yet. A JPEG is decoded at
    a reduced DCT scale, to no less than `_DECODE_AT_LEAST` pixels a side. Raises what PIL raises for bytes
    that are not an image.
    """
    if isinstance(image, bytes):
        with PIL.Image.open(io.BytesIO(image)) as opened:
            return fingerprint(opened)
    if image.format == "JPEG":
        image.draft("RGB", (_DECODE_AT_LEAST, _DECODE_AT_LEAST))
    image.load()
    return picture_fingerprint(PIL.ImageOps.exif_transpose(image))


def picture_fingerprint(picture: PIL.Image.Image) -> np.ndarray:
    """`fingerprint` of a decoded, upright picture (any mode)."""
    return _phashes(to_rgb(picture))


def _phashes(image: PIL.Image.Image) -> np.ndarray:
    """`imagehash.phash` of `image` and of its `_CROPS`, as uint64 words, in one batched DCT.

    The whole picture's thumbnail is PIL's, as imagehash makes it (the hash is imagehash's bit for bit). A crop's
    thumbnail is within a few bits of imagehash's hash of the cropped picture (tested): for a picture under
    `_CROP_SOURCE` pixels a side, resampled with PIL's Lanczos weights in floating point (one matrix product per
    side: fast on small pictures); for a larger one, by PIL with a reducing gap (a box reduction to no less
    than twice the thumbnail, then Lanczos), at a cost that barely grows with the picture.
    """
    grey = image.convert("L")
    width, height = grey.size
    thumbnails = [np.asarray(grey.resize((_THUMBNAIL, _THUMBNAIL), PIL.Image.Resampling.LANCZOS), dtype=np.float64)]
    if min(width, height) < _CROP_SOURCE:
        rows, columns = _crop_weights(height, width)
        thumbnails.extend(np.clip(np.rint(rows @ np.asarray(grey, dtype=np.float64) @ columns), 0, 255))
    else:
        for left, top, right, bottom in _CROPS[1:]:
            box = (int(width * left), int(height * top), width - int(width * right), height - int(height * bottom))
            crop = grey.crop(box).resize((_THUMBNAIL, _THUMBNAIL), PIL.Image.Resampling.LANCZOS, reducing_gap=2.0)
            thumbnails.append(np.asarray(crop, dtype=np.float64))
    dct = scipy.fftpack.dct(scipy.fftpack.dct(np.stack(thumbnails), axis=1), axis=2)[:, :8, :8]
    dct = dct.reshape(len(_CROPS), 64)
    middle = np.sort(dct, axis=1)[:, 31:33]
    bits = dct > (middle[:, :1] + middle[:, 1:]) / 2  # the median, as numpy computes it for 64 values
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _crop_weights(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per crop of `_CROPS` after the first: row weights `(6, 32, height)` and column weights `(6, width, 32)`."""
    rows = np.stack([_lanczos(height, top, bottom) for _, top, _, bottom in _CROPS[1:]])
    columns = np.stack([_lanczos(width, left, right).T for left, _, right, _ in _CROPS[1:]])
    return rows, columns


@functools.lru_cache(maxsize=256)  # a side length's weights per cut: bounded, whatever the image sizes
def _lanczos(size: int, cut_before: float, cut_after: float) -> np.ndarray:
    """`(_THUMBNAIL, size)` weights resampling the span of an axis of `size` pixels without the cut fractions
    to `_THUMBNAIL` pixels, as PIL's Lanczos filter does (support 3, widened by the scale when shrinking)."""
    start, stop = int(size * cut_before), size - int(size * cut_after)
    scale = (stop - start) / _THUMBNAIL
    widen = max(scale, 1.0)
    centres = start + (np.arange(_THUMBNAIL) + 0.5) * scale
    positions = np.arange(size) + 0.5
    distance = (positions[None, :] - centres[:, None]) / widen
    weights = np.sinc(distance) * np.sinc(distance / 3) * (np.abs(distance) < 3)
    weights[:, :start], weights[:, stop:] = 0, 0
    return weights / weights.sum(axis=1, keepdims=True)


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    """Hash bits between two fingerprints: the whole of one against every hash of the other, the smaller."""
    xor = np.concatenate([a[0] ^ b, b[0] ^ a])
    return int(np.unpackbits(xor.view(np.uint8)).reshape(len(xor), 64).sum(1).min())


class Fingerprinted(NamedTuple):
    """An image's encoded bytes, as stored, and their `fingerprint`."""

    data: bytes
    fingerprint: np.ndarray


def leak_columns(
    mention: Fingerprinted | None, candidates: Sequence[Fingerprinted | None], label: int
) -> tuple[str | None, list[int]]:
    """``(mention_image_leak, mention_image_near_candidates)`` of an instance, from its fingerprinted images
    (None where an image is missing); a copy is byte for byte, a near-duplicate within `NEAR_DISTANCE`."""
    if mention is None:
        return None, []

    def same_or_near(other: Fingerprinted) -> bool:
        return other.data == mention.data or _distance(mention.fingerprint, other.fingerprint) <= NEAR_DISTANCE

    near = [i for i, other in enumerate(candidates) if i != label and other is not None and same_or_near(other)]
    gold = candidates[label]
    if gold is None:
        return None, near
    if gold.data == mention.data:
        return "copy", near
    return ("near" if same_or_near(gold) else "none"), near


class LeakDetector:
    """`check` an instance's images for the leak from their bytes; fingerprints are remembered by content
    (bounded)."""

    def __init__(self, cache_size: int = 1 << 16) -> None:
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def check(
        self, mention: bytes | None, candidates: Sequence[bytes | None], label: int
    ) -> tuple[str | None, list[int]]:
        """`leak_columns` of an instance from its image bytes.

        Raises `OSError` (or what PIL raises) for an image that cannot be decoded (see `fingerprint`).
        """
        if mention is None:
            return None, []
        prints = [None if data is None else self._fingerprinted(data) for data in candidates]
        return leak_columns(self._fingerprinted(mention), prints, label)

    def check_values(self, mention: Any, candidates: Sequence[Any] | None, label: int) -> tuple[str | None, list[int]]:
        """`check` on undecoded ``{"bytes", "path"}`` image values, as rows hold them (None where none)."""
        images = [value["bytes"] if value else None for value in candidates or []]
        if not images:
            return None, []
        return self.check(mention["bytes"] if mention else None, images, label)

    def _fingerprinted(self, data: bytes) -> Fingerprinted:
        key = content_key(data)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = fingerprint(data)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return Fingerprinted(data, found)
