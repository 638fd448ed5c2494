"""From validated raw records to rows of the public schema: splits, ids, images and task coverage."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import pyarrow as pa

from ..images import (
    STORED_MODES,
    content_key,
    decode_for_resizing,
    default_max_pixels,
    encode,
    plain_jpeg_size,
    shrink_to_shorter_side,
    to_8bit,
)
from ..tasks import TASKS
from .audit import DatasetAudit
from .features import INSTANCE_FEATURES, KB_FEATURES, SPLITS
from .image_paths import ImagePathResolver
from .leak import Deferred, FingerprintBatch, Fingerprinted, greyscale, leak_columns, picture_fingerprint
from .raw_files import M3ELFormatError
from .records import OnError, RawImage, RawRecord, SkipReport

__all__ = ["KB_SOURCE_COLUMNS", "ImageReader", "RowBuilder", "split_of", "usable_tasks"]

KB_SOURCE_COLUMNS = ("topic", "candidates", "candidate_images", "candidate_image_sources")
"""The instance columns a knowledge base is built from (`RowBuilder.kb_tables`)."""


def split_of(content_key: str) -> str:
    """The split of an instance, from the digest of its content (`RawRecord.content_key`).

    Seed-free and stable under reordering or adding records; exact duplicates share a split, so
    a duplicated instance never sits in train and test at once.
    """
    bucket = int(hashlib.blake2b(content_key.encode(), digest_size=8).hexdigest(), 16) % 10_000 / 10_000
    cumulative = 0.0
    for split, ratio in SPLITS.items():
        cumulative += ratio
        if bucket < cumulative:
            return split
    return split


def usable_tasks(has_mention_image: bool, has_gold_image: bool) -> list[str]:
    """The task names an instance can serve, given which images it has."""
    return list(_usable_tasks(bool(has_mention_image), bool(has_gold_image)))


@functools.cache
def _usable_tasks(has_mention_image: bool, has_gold_image: bool) -> tuple[str, ...]:
    return tuple(
        task.name
        for task in TASKS
        if (has_mention_image or not task.mention_needs_image) and (has_gold_image or not task.entity_needs_image)
    )


_READ_AHEAD = 32
"""Records whose images `RowBuilder.rows` reads before making their rows (their fingerprints are computed together)."""
_MEMO_ENTRIES = 1 << 16
_MEMO_BYTES = 64 << 20


@dataclass
class ImageReader:
    """Reads release images as bytes, checks them, converts or shrinks them where asked, and fingerprints them.

    Each image is opened once: PIL's lazy header gives its size (a plain JPEG stored as it is gets it from
    `simplejpeg`'s header read, `m3el_hf.images.plain_jpeg_size`, and under 256 pixels a side its decode too), and
    an image with more pixels than `max_pixels` (a decompression bomb) is refused before anything decodes it. Then
    one decode serves every need. An image in a mode that readers would show differently (16-bit, CMYK, ...) is
    converted to 8 bits by scaling and stored as PNG. With `image_size`, an image whose shorter side exceeds it is
    decoded (JPEGs at a reduced scale), turned upright, resized with bicubic resampling so that its shorter side is
    `image_size`, and stored as JPEG (PNG with transparency); with `max_image_side`, its longer side is shrunk
    instead (Lanczos). Everything else is stored byte for byte, and decoded small (`m3el_hf.data.leak.greyscale`)
    for its leak fingerprint, which waits to be computed with those of the next images read (a `FingerprintBatch`);
    a converted image is fingerprinted from the picture it is stored as. An image whose pixels do not decode is
    refused. Results are remembered by content (bounded): the release stores a candidate's image again in the folder
    of every instance it is a candidate of.

    Args:
        root (`Path`): the release root; image paths are resolved under it and never outside.
        max_image_side (`int`, *optional*): longer side above which an image is downscaled and re-encoded.
        image_size (`int`, *optional*): shorter side above which an image is downscaled and re-encoded.
        max_pixels (`int`, *optional*): most pixels an image may have (default: PIL's decompression-bomb limit).
    """

    root: Path
    max_image_side: int | None = None
    image_size: int | None = None
    max_pixels: int | None = None
    _paths: ImagePathResolver | None = field(default=None, init=False, repr=False)
    _memo: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _memo_bytes: int = field(default=0, init=False, repr=False)
    _batch: FingerprintBatch = field(default_factory=FingerprintBatch, init=False, repr=False)

    def read(self, image: RawImage, source: str, index: int) -> Fingerprinted:
        """The image's bytes as stored (for the Image feature's ``{"bytes", "path": None}``) and its leak
        fingerprint; raise `M3ELFormatError` when it is unusable.

        No file name is kept. A mention's image is stored in the release as the gold entity's file
        (``.../{mention}-{gold Qid}/{Qid}.jpg``), so its name would give the answer away; the provenance
        columns keep the Commons file name and URL; and `datasets` re-checks every named image on write.
        """
        data = self._read_bytes(image, source, index)
        key = content_key(data)
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            converted, prints = found
            return Fingerprinted(converted or data, prints)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # compared with max_pixels
                size = plain_jpeg_size(data)
                if self._stored_as_is(size):  # no need of PIL's header
                    converted, prints = None, self._fingerprint(data, size)
                else:
                    with PIL.Image.open(io.BytesIO(data)) as opened:
                        self._check_pixels(opened.size, image, source, index)
                        converted, prints = self._convert(opened)
        except PIL.Image.DecompressionBombError as error:
            raise M3ELFormatError(
                f"image too large: {image.local!r} ({str(error).rstrip('.')}), over the limit of "
                f"{self.max_pixels or default_max_pixels():,} (--max-pixels)",
                source,
                index,
                key="image_too_large",
            ) from None
        except PIL.UnidentifiedImageError:  # its message holds an object address: reports must repeat exactly
            raise _undecodable(image, "not an image file PIL can read", source, index) from None
        except M3ELFormatError:
            raise
        except (OSError, SyntaxError, ValueError) as error:
            raise _undecodable(image, error, source, index) from None
        self._remember(key, converted, prints)
        return Fingerprinted(converted or data, prints)

    def _check_pixels(self, size: tuple[int, int], image: RawImage, source: str, index: int) -> None:
        width, height = size
        limit = self.max_pixels or default_max_pixels()
        if width * height > limit:
            raise M3ELFormatError(
                f"image too large: {image.local!r} is {width}x{height} = {width * height:,} pixels, "
                f"over the limit of {limit:,} (--max-pixels)",
                source,
                index,
                key="image_too_large",
            )

    def _convert(self, opened: PIL.Image.Image) -> tuple[bytes | None, np.ndarray | Deferred]:
        """The bytes to store instead of the file's (None to store it as it is) and the fingerprint, from one
        decode of `opened` (a file PIL has opened and not loaded)."""
        width, height = opened.size
        if self.image_size and min(width, height) > self.image_size:
            return _reencoded(shrink_to_shorter_side(opened, self.image_size))
        if self.max_image_side and max(width, height) > self.max_image_side:
            picture = decode_for_resizing(opened)
            picture.thumbnail((self.max_image_side, self.max_image_side), PIL.Image.Resampling.LANCZOS)
            return _reencoded(picture)
        if opened.mode not in STORED_MODES:
            picture = to_8bit(PIL.ImageOps.exif_transpose(opened))
            out = io.BytesIO()
            # zlib's fastest level: 40% less time than its default for 11% more bytes, on photos (the same pixels)
            picture.save(out, format="PNG", compress_level=1)
            return out.getvalue(), picture_fingerprint(picture)
        return None, self._fingerprint(opened)

    def _stored_as_is(self, size: tuple[int, int] | None) -> bool:
        """Whether a plain JPEG (`plain_jpeg_size`: None for another image) of `size` is within the pixel
        limit and stored as it is."""
        if size is None:
            return False
        width, height = size
        return not (
            width * height > (self.max_pixels or default_max_pixels())
            or (self.image_size and min(size) > self.image_size)
            or (self.max_image_side and max(size) > self.max_image_side)
        )

    def _fingerprint(
        self, image: bytes | PIL.Image.Image, plain_size: tuple[int, int] | None = None
    ) -> Deferred | np.ndarray:
        """The fingerprint of an image stored as it is (`greyscale`), computed with those of the next images read."""
        if not self._batch.is_open:
            self._batch = FingerprintBatch()
        return self._batch.add(greyscale(image, plain_size))

    def _remember(self, key: str, converted: bytes | None, prints: np.ndarray | Deferred) -> None:
        """Keep a result by content; the oldest go beyond `_MEMO_ENTRIES` results or `_MEMO_BYTES` of images."""
        self._memo[key] = (converted, prints)
        self._memo_bytes += len(converted or b"")
        while len(self._memo) > _MEMO_ENTRIES or self._memo_bytes > _MEMO_BYTES:
            old, _ = self._memo.popitem(last=False)[1]
            self._memo_bytes -= len(old or b"")

    def _read_bytes(self, image: RawImage, source: str, index: int) -> bytes:
        if self._paths is None:
            self._paths = ImagePathResolver(self.root)
        try:
            return self._paths.read_bytes(image.local)
        except FileNotFoundError as error:
            raise M3ELFormatError(f"missing image: {error}", source, index, key="missing_image") from None
        except ValueError as error:
            raise M3ELFormatError(f"unsafe image path: {error}", source, index, key="unsafe_image_path") from None
        except OSError as error:  # e.g. no permission to read it
            raise M3ELFormatError(
                f"unreadable image: {image.local!r} ({error.strerror or error})", source, index, key="unreadable_image"
            ) from None


def _reencoded(picture: PIL.Image.Image) -> tuple[bytes, np.ndarray]:
    return encode(picture), picture_fingerprint(picture)


def _undecodable(image: RawImage, problem: Any, source: str, index: int) -> M3ELFormatError:
    return M3ELFormatError(f"undecodable image: {image.local!r} ({problem})", source, index, key="undecodable_image")


def _value(image: Fingerprinted | None) -> dict[str, Any] | None:
    """The value of the Image feature: bytes, no path."""
    return None if image is None else {"bytes": image.data, "path": None}


def _source(image: RawImage | None) -> dict[str, str] | None:
    return {"file": image.file, "url": image.url} if image else None


@dataclass
class RowBuilder:
    """Turns `RawRecord`s of one split into rows of `INSTANCE_FEATURES` (or a subset of its columns).

    Image files are read, by `images`, only when an image column is kept (`images` may be None for a
    builder that only turns instance rows into a knowledge base, `kb_tables`). Under ``on_error="skip"``
    an unusable image becomes null and is counted in `report`; otherwise it raises. Counts for the
    dataset card go to `audit` when all columns are kept.
    """

    images: ImageReader | None
    columns: tuple[str, ...] = tuple(INSTANCE_FEATURES)
    on_error: OnError = "raise"
    report: SkipReport = field(default_factory=SkipReport)
    audit: DatasetAudit = field(default_factory=DatasetAudit)
    _seen: Counter = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        self._wanted = frozenset(self.columns)

    def rows(self, records: Iterable[RawRecord], split: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield ``(split, id, row)`` for the records, or for those that fall in `split` only.

        The images of up to `_READ_AHEAD` records are read before their rows are made, so that their leak
        fingerprints are computed together (`m3el_hf.data.leak.FingerprintBatch`).
        """
        waiting: list[tuple[RawRecord, str, str, bool, tuple]] = []
        for record in records:
            key = record.content_key
            record_split = split_of(key)
            if split is not None and record_split != split:
                continue
            self._seen[key] += 1
            n = self._seen[key]
            row_id = f"{record.topic}-{key}" + (f"-{n}" if n > 1 else "")
            waiting.append((record, row_id, record_split, n > 1, self._images_of(record)))
            if len(waiting) == _READ_AHEAD:
                yield from self._made(waiting)
                waiting.clear()
        yield from self._made(waiting)

    def _made(self, waiting: list[tuple[RawRecord, str, str, bool, tuple]]) -> Iterator[tuple[str, str, dict]]:
        for record, row_id, split, duplicate, images in waiting:
            yield split, row_id, self._row(record, row_id, split, duplicate, *images)

    def _image(self, image: RawImage | None, record: RawRecord, cache: dict) -> Fingerprinted | None:
        if image is None:
            return None
        if image.local not in cache:
            try:
                cache[image.local] = self.images.read(image, record.source, record.index)
            except M3ELFormatError as error:
                if self.on_error == "raise":
                    raise
                self.report.add("image", error)
                cache[image.local] = None
        return cache[image.local]

    def _images_of(self, record: RawRecord) -> tuple[Fingerprinted | None, list[Fingerprinted | None] | None]:
        """The mention's image and the candidates' (None where a column does not need them), read."""
        wanted, cache = self._wanted, {}
        mention_image = self._image(record.image, record, cache) if "mention_image" in wanted else None
        # The leak columns compare the mention's image with the candidates': read those for them too.
        candidate_images = (
            [self._image(c.image, record, cache) for c in record.candidates]
            if "candidate_images" in wanted or "mention_image_leak" in wanted
            else None
        )
        return mention_image, candidate_images

    def _row(
        self,
        record: RawRecord,
        row_id: str,
        split: str,
        duplicate: bool,
        mention_image: Fingerprinted | None,
        candidate_images: list[Fingerprinted | None] | None,
    ) -> dict[str, Any]:
        wanted = self._wanted
        leak, near_candidates = (
            leak_columns(mention_image, candidate_images, record.label)
            if "mention_image_leak" in wanted
            else (None, [])
        )
        mention_image = _value(mention_image)
        candidate_images = None if candidate_images is None else [_value(image) for image in candidate_images]
        label = record.label
        if candidate_images is not None:
            has_gold = candidate_images[label] is not None
        else:
            has_gold = record.candidates[label].image is not None
        has_mention = mention_image is not None if "mention_image" in wanted else record.image is not None
        row = {
            "id": row_id,
            "topic": record.topic,
            "mention": record.name,
            "sentence": record.sentence,
            "mention_image": mention_image,
            "mention_image_source": _source(record.image) if mention_image else None,
            "mention_image_leak": leak,
            "mention_image_near_candidates": near_candidates,
            "candidates": [{"qid": c.qid, "name": c.name, "description": c.description} for c in record.candidates],
            "candidate_images": candidate_images,
            "candidate_image_sources": None
            if candidate_images is None
            else [
                _source(c.image) if img else None for c, img in zip(record.candidates, candidate_images, strict=True)
            ],
            "label": label,
            "gold_qid": record.qid,
            "tasks": usable_tasks(has_mention, has_gold),
            "extra": json.dumps(record.extra, sort_keys=True, default=str) if record.extra else None,
        }
        if len(wanted) == len(INSTANCE_FEATURES):
            self._observe(record, row, split, duplicate)
        return {name: row[name] for name in self.columns}

    def _observe(self, record: RawRecord, row: dict[str, Any], split: str, duplicate: bool) -> None:
        gold = row["candidate_images"][row["label"]]
        mention = row["mention_image"]
        self.audit.topic(record.topic).observe(
            split,
            num_candidates=len(record.candidates),
            label=row["label"],
            tasks=row["tasks"],
            mention_image_missing=mention is None,
            candidate_images_missing=sum(img is None for img in row["candidate_images"]),
            mention_image_is_gold_image=mention is not None and gold is not None and mention["bytes"] == gold["bytes"],
            duplicate=duplicate,
            leak=row["mention_image_leak"],
            near_candidates=len(row["mention_image_near_candidates"]),
        )

    def kb_tables(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
        """Tables of `KB_FEATURES` from batches of instance columns `KB_SOURCE_COLUMNS`: one row per entity of a topic.

        An entity is taken from its first occurrence that has an image; entities that never have one
        come last, each from its first occurrence. Images stay in Arrow (never converted to Python);
        memory holds the keys seen and the text of image-less entities.
        """
        schema = KB_FEATURES.arrow_schema
        done: set[tuple[str, str]] = set()
        imageless: dict[tuple[str, str], dict[str, Any]] = {}
        for batch in batches:
            lists = batch.column("candidates")
            columns = {
                "topic": batch.column("topic").take(lists.value_parent_indices()),
                **{name: lists.flatten().field(name) for name in ("qid", "name", "description")},
                "image": batch.column("candidate_images").flatten(),
                "image_source": batch.column("candidate_image_sources").flatten(),
            }
            if not len(columns["image"]) == len(columns["image_source"]) == len(columns["qid"]):
                raise ValueError("candidate_images and candidate_image_sources must be aligned with candidates")
            keys = list(zip(columns["topic"].to_pylist(), columns["qid"].to_pylist(), strict=True))
            picked, first_without = [], []
            has_images = columns["image"].is_valid().to_pylist()
            for position, (key, has_image) in enumerate(zip(keys, has_images, strict=True)):
                if key in done:
                    continue
                if has_image:
                    done.add(key)
                    imageless.pop(key, None)
                    picked.append(position)
                    self.audit.topic(key[0]).kb_entities += 1
                elif key not in imageless:
                    imageless[key] = {}  # its place in the order of first occurrences; filled below
                    first_without.append(position)
            if first_without:
                text = pa.table({k: columns[k] for k in ("topic", "qid", "name", "description")})
                for row in text.take(first_without).to_pylist():
                    key = (row["topic"], row["qid"])
                    if key in imageless:  # not if a later occurrence in this batch had an image
                        imageless[key] = {**row, "image": None, "image_source": None}
            if picked:
                yield pa.Table.from_arrays([columns[name].take(picked) for name in schema.names], schema=schema)
        for topic, _ in imageless:
            self.audit.topic(topic).kb_entities += 1
        if imageless:
            yield pa.Table.from_pylist(list(imageless.values()), schema=schema)
