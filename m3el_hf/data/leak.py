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

from ..images import content_key, decode_plain_jpeg, plain_jpeg_size, to_rgb

__all__ = [
    "NEAR_DISTANCE",
    "Deferred",
    "FingerprintBatch",
    "Fingerprinted",
    "LeakDetector",
    "fingerprint",
    "fingerprints",
    "greyscale",
    "leak_columns",
    "luma",
    "picture_fingerprint",
]

NEAR_DISTANCE = 12
"""Most differing hash bits (of 64) between near-duplicates."""

# (left, top, right, bottom) fractions cut off: the whole picture first.
_CROPS = ((0, 0, 0, 0), (0.05,) * 4, (0.1,) * 4, (0.1, 0, 0, 0), (0, 0.1, 0, 0), (0, 0, 0.1, 0), (0, 0, 0, 0.1))
_THUMBNAIL = 32
_DECODE_AT_LEAST = 4 * _THUMBNAIL  # JPEGs are decoded at a reduced scale, to no less than this
_CROP_SOURCE = 4 * _THUMBNAIL  # pictures from this side up have their crops resampled by PIL
_BATCH_SIDE = 4 * _CROP_SOURCE  # a longer side (a thin picture) is fingerprinted alone, its weights not kept
_LUMA = np.array([19595, 38470, 7471], dtype=np.uint32)  # PIL's weights of R, G and B, over 2**16


def fingerprint(image: bytes | PIL.Image.Image) -> np.ndarray:
    """The perceptual hashes of an encoded image, upright: uint64 `(7,)`, the whole picture first, then crops.

    `image` is the encoded bytes, or the file PIL has opened from them and not loaded yet. Raises what PIL
    raises for bytes that are not an image.
    """
    return fingerprints([greyscale(image)])[0]


def picture_fingerprint(picture: PIL.Image.Image) -> np.ndarray:
    """`fingerprint` of a decoded, upright picture (any mode)."""
    return fingerprints([np.asarray(to_rgb(picture).convert("L"))])[0]


def greyscale(image: bytes | PIL.Image.Image, plain_size: tuple[int, int] | None = None) -> np.ndarray:
    """The picture an image is fingerprinted from: its upright greyscale decode, uint8 `(height, width)`.

    `image` is as for `fingerprint`. A JPEG is decoded at a reduced DCT scale, to no less than
    `_DECODE_AT_LEAST` pixels a side. From bytes, one that needs no reduction nor orientation is decoded by
    libjpeg-turbo straight into an array (`simplejpeg`, with PIL's settings: the same pixels, tested), its luma
    in PIL's integers. `plain_size` is the bytes' `plain_jpeg_size` where the caller has read it already.
    """
    if isinstance(image, bytes):
        fast = _jpeg_greyscale(image, plain_size or plain_jpeg_size(image))
        if fast is not None:
            return fast
        with PIL.Image.open(io.BytesIO(image)) as opened:
            return greyscale(opened)
    if image.format == "JPEG":
        image.draft("RGB", (_DECODE_AT_LEAST, _DECODE_AT_LEAST))
    image.load()
    return np.asarray(to_rgb(PIL.ImageOps.exif_transpose(image)).convert("L"))


def _jpeg_greyscale(data: bytes, size: tuple[int, int] | None) -> np.ndarray | None:
    """`greyscale` of a JPEG that PIL would decode at full scale and not turn (`size`: its `plain_jpeg_size`), by
    `simplejpeg`; else None."""
    if size is None or min(size) >= 2 * _DECODE_AT_LEAST:  # PIL's draft would reduce it
        return None
    rgb = decode_plain_jpeg(data)
    return None if rgb is None else luma(rgb)  # a greyscale JPEG too: its luma is its grey


def luma(rgb: np.ndarray) -> np.ndarray:
    """PIL's ``convert("L")`` of uint8 RGB pixels `(..., 3)`: ITU-R 601-2 luma in 16-bit fixed point, rounded."""
    return ((rgb @ _LUMA + 0x8000) >> 16).astype(np.uint8)


def fingerprints(pictures: Sequence[np.ndarray]) -> np.ndarray:
    """`fingerprint`s of greyscale pictures (`greyscale`), uint64 `(len(pictures), 7)`, computed together.

    Each hash is the one `imagehash.phash` gives the thumbnail: the whole picture's is PIL's, as imagehash makes
    it (imagehash's hash bit for bit). A crop's thumbnail is within a few bits of imagehash's hash of the
    cropped picture (tested): for a picture under `_CROP_SOURCE` pixels a side, resampled with PIL's Lanczos
    weights in floating point (one matrix product per side, for all the pictures of a size at once); for a
    larger one, by PIL with a reducing gap (a box reduction to no less than twice the thumbnail, then
    Lanczos), at a cost that barely grows with the picture. One DCT call serves every thumbnail.
    """
    if not pictures:
        return np.empty((0, len(_CROPS)), dtype=np.uint64)
    thumbnails = np.empty((len(pictures), len(_CROPS), _THUMBNAIL, _THUMBNAIL))
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, picture in enumerate(pictures):
        if min(picture.shape) < _CROP_SOURCE:
            sizes.setdefault(picture.shape, []).append(i)
        else:
            thumbnails[i] = _resampled_by_pil(PIL.Image.fromarray(picture))
    for (height, width), group in sizes.items():
        stack = np.stack([pictures[i] for i in group]).astype(np.float64)
        rows, columns = (_kept_crop_weights if max(height, width) <= _BATCH_SIDE else _crop_weights)(height, width)
        # Per picture and crop, the products of the same shapes as for one picture alone: the same sums.
        thumbnails[group, 1:] = np.clip(np.rint(rows @ stack[:, None] @ columns), 0, 255)
        if (height, width) == (_THUMBNAIL, _THUMBNAIL):
            thumbnails[group, 0] = stack  # PIL's resize to the size it has is a copy
        else:
            thumbnails[group, 0] = [_pil_thumbnail(PIL.Image.fromarray(pictures[i])) for i in group]
    dct = scipy.fftpack.dct(scipy.fftpack.dct(thumbnails, axis=2)[:, :, :8], axis=3)[..., :8]
    dct = dct.reshape(len(pictures) * len(_CROPS), 64)
    middle = np.partition(dct, (31, 32), axis=1)[:, 31:33]
    bits = dct > (middle[:, :1] + middle[:, 1:]) / 2  # the median, as numpy computes it for 64 values
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).reshape(len(pictures), len(_CROPS))


def _pil_thumbnail(picture: PIL.Image.Image, reducing_gap: float | None = None) -> np.ndarray:
    return np.asarray(
        picture.resize((_THUMBNAIL, _THUMBNAIL), PIL.Image.Resampling.LANCZOS, reducing_gap=reducing_gap),
        dtype=np.float64,
    )


def _resampled_by_pil(grey: PIL.Image.Image) -> np.ndarray:
    """The thumbnails `(7, 32, 32)` of a picture of `_CROP_SOURCE` pixels a side or more, by PIL."""
    width, height = grey.size
    thumbnails = [_pil_thumbnail(grey)]
    for left, top, right, bottom in _CROPS[1:]:
        box = (int(width * left), int(height * top), width - int(width * right), height - int(height * bottom))
        thumbnails.append(_pil_thumbnail(grey.crop(box), reducing_gap=2.0))
    return np.stack(thumbnails)


def _crop_weights(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per crop of `_CROPS` after the first: row weights `(6, 32, height)` and column weights `(6, width, 32)`."""
    rows = np.stack([_lanczos(height, top, bottom) for _, top, _, bottom in _CROPS[1:]])
    columns = np.stack([_lanczos(width, left, right).T for left, _, right, _ in _CROPS[1:]])
    rows.flags.writeable = columns.flags.writeable = False
    return rows, columns


# Per picture size up to `_BATCH_SIDE` a side: at most 64 × 1.6 MB, whatever the image sizes.
_kept_crop_weights = functools.lru_cache(maxsize=64)(_crop_weights)


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
    return int(np.bitwise_count(np.concatenate([a[0] ^ b, b[0] ^ a])).min())


class FingerprintBatch:
    """Pictures (`greyscale`) waiting for their fingerprints, computed together in one `fingerprints` call: when
    one of them is asked for, or when the batch holds `size` pictures. A computed batch takes no more, and
    keeps nothing but the fingerprints it handed out (`Deferred`)."""

    def __init__(self, size: int = 256) -> None:
        self._pictures: list[np.ndarray] = []
        self._waiting: list[np.ndarray] = []  # the fingerprints to fill, one per picture
        self._size = size
        self.is_open = True
        """Whether it takes pictures still (its fingerprints are not computed)."""

    def add(self, picture: np.ndarray) -> np.ndarray | Deferred:
        """The fingerprint of `picture`, to come: computed now for a picture of `_CROP_SOURCE` pixels a side or
        more (its thumbnails are PIL's resizes, nothing shared: kept waiting it would only hold memory), or a
        thin one longer than `_BATCH_SIDE` (its products are large and rarely shared)."""
        if not self.is_open:
            raise ValueError("this batch was computed: start another")
        if min(picture.shape) >= _CROP_SOURCE or max(picture.shape) > _BATCH_SIDE:
            return fingerprints([picture])[0]
        deferred = Deferred(self, np.zeros(len(_CROPS), dtype=np.uint64))
        self._pictures.append(picture)
        self._waiting.append(deferred.fingerprint)
        if len(self._pictures) == self._size:
            self.compute()
        return deferred

    def compute(self) -> None:
        """Fill in the fingerprints of the batch's pictures, on the first call."""
        if self.is_open:
            for waiting, computed in zip(self._waiting, fingerprints(self._pictures), strict=True):
                waiting[:] = computed
            self._pictures, self._waiting, self.is_open = [], [], False


class Deferred(NamedTuple):
    """A fingerprint that `batch` fills in when it computes."""

    batch: FingerprintBatch
    fingerprint: np.ndarray

    def resolve(self) -> np.ndarray:
        """The fingerprint, its batch computed first."""
        self.batch.compute()
        return self.fingerprint


class Fingerprinted:
    """An image's encoded bytes, as stored, and their `fingerprint`: given, or `Deferred` to a batch."""

    __slots__ = ("_fingerprint", "data")

    def __init__(self, data: bytes, fingerprint: np.ndarray | Deferred) -> None:
        self.data = data
        self._fingerprint = fingerprint

    @property
    def fingerprint(self) -> np.ndarray:
        """The perceptual hashes (`fingerprint`); a deferred one computes its batch."""
        if isinstance(self._fingerprint, Deferred):
            self._fingerprint = self._fingerprint.resolve()
        return self._fingerprint


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
        """`leak_columns` of an instance from its image bytes; the new ones are fingerprinted together.

        Raises `OSError` (or what PIL raises) for an image that cannot be decoded (see `fingerprint`).
        """
        if mention is None:
            return None, []
        found, *prints = self._fingerprinted([mention, *candidates])
        return leak_columns(found, prints, label)

    def check_values(self, mention: Any, candidates: Sequence[Any] | None, label: int) -> tuple[str | None, list[int]]:
        """`check` on undecoded ``{"bytes", "path"}`` image values, as rows hold them (None where none)."""
        images = [value["bytes"] if value else None for value in candidates or []]
        if not images:
            return None, []
        return self.check(mention["bytes"] if mention else None, images, label)

    def _fingerprinted(self, images: Sequence[bytes | None]) -> list[Fingerprinted | None]:
        keys = [None if data is None else content_key(data) for data in images]
        new = {key: data for key, data in zip(keys, images, strict=True) if key and key not in self._cache}
        known = {key: self._cache[key] for key in keys if key in self._cache}
        known.update(zip(new, fingerprints([greyscale(data) for data in new.values()]), strict=True))
        for key in known:
            self._cache[key] = known[key]
            self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return [
            None if key is None else Fingerprinted(data, known[key]) for key, data in zip(keys, images, strict=True)
        ]
