"""Images of synthetic releases: small drawings, or photo-like pictures of Wikimedia-Commons-like sizes and formats.

Both show a scene (`draw`): a background that tells nothing about the entity (a gradient between two
colours drawn uniformly over RGB, with mild texture), one or two small distractor shapes of random
kinds and `COLOURS`, and the entity's identity object: its type's shape, filled with its attribute's
colour and outlined in its ink. An entity's knowledge-base picture places the object as its `style`
says; a mention's picture of it draws a new placement, size, background, texture and distractors,
so the two share only the identity (shape and colour).

A photo is rendered small (longer side `_CANVAS`) with illumination, texture and blur, upsampled
to its Commons-like size, given sensor grain from a fixed tiled pattern and encoded in one of
`LOOKS`: per image, 71% baseline RGB JPEG, 10% progressive RGB JPEG, 5% EXIF-rotated RGB JPEG
(Orientation 3, 6 or 8), 5% greyscale JPEG, 2% CMYK JPEG, 5% RGBA PNG with transparent corners and
2% 16-bit greyscale PNG (mode ``I;16``, 8-bit values ×257).
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
from typing import Any, Protocol

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter

__all__ = [
    "COLOURS",
    "LOOKS",
    "SIDES",
    "Signal",
    "draw",
    "encode",
    "photo",
    "photo_size",
    "pick_look",
    "render_photo",
    "store_photo",
]

COLOURS = ((200, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 40), (150, 50, 180), (240, 130, 30))
"""Fill colour of the identity object per attribute index; distractors use them too."""

LOOKS: dict[str, tuple[int, str]] = {
    "jpeg": (71, "JPEG"),
    "progressive": (10, "JPEG"),
    "exif-rotated": (5, "JPEG"),
    "grey": (5, "JPEG"),
    "cmyk": (2, "JPEG"),
    "rgba-png": (5, "PNG"),
    "grey16-png": (2, "PNG"),
}
"""Photo looks: share of images in percent and file format."""

SIDES = (300, 3000)
"""Range of a photo's longer side in pixels, drawn log-uniformly (median ≈ 950)."""

# (width, height) ratio and share in percent: landscapes, square, portraits, panoramas.
_ASPECTS = {(4, 3): 30, (3, 2): 18, (16, 9): 8, (1, 1): 10, (3, 4): 14, (2, 3): 12, (2, 1): 5, (3, 1): 3}
_CANVAS = 160  # longer side of the low-resolution rendering
_TEXTURE_TILE = 512  # side of the fixed background texture that scenes crop (at least the largest drawing)
# Outlines of the triangle, diamond and cross for radius 1; the cross's arms are 2/3 wide.
_CROSS = ((-1, -3), (1, -3), (1, -1), (3, -1), (3, 1), (1, 1), (1, 3), (-1, 3), (-1, 1), (-3, 1), (-3, -1), (-1, -1))
_POLYGONS = {
    2: ((0, -1), (1, 1), (-1, 1)),
    3: ((0, -1), (1, 0), (0, 1), (-1, 0)),
    4: tuple((x / 3, y / 3) for x, y in _CROSS),
}
_GRAIN_TILE, _GRAIN_SIGMA = 256, 5.0
# Stored pixels per EXIF orientation: `ImageOps.exif_transpose` undoes these.
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


class Signal(Protocol):
    """What an image shows: an entity's type (`kind`), attribute and `style`.

    `style` is (x, y, radius, dark): where its knowledge-base picture places the identity object (x and
    y in [0, 1] across the room that keeps it inside, radius as a fraction of the shorter side) and
    whether its ink is dark.
    """

    @property
    def kind(self) -> int: ...
    @property
    def attribute(self) -> int: ...
    @property
    def style(self) -> tuple[float, float, float, bool]: ...


def _pick(shares: dict[Any, int], u: float) -> Any:
    """The key whose cumulative share interval holds `u` in [0, 1)."""
    bounds = list(itertools.accumulate(shares.values()))
    return list(shares)[bisect.bisect_right(bounds, u * bounds[-1])]


def pick_look(u: float) -> str:
    """The look (a key of `LOOKS`) for a uniform draw `u` in [0, 1)."""
    return _pick({look: share for look, (share, _) in LOOKS.items()}, u)


def photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """A Commons-like (width, height): longer side log-uniform in `SIDES`, aspect ratio from `_ASPECTS`."""
    longer = round(float(np.exp(rng.uniform(np.log(SIDES[0]), np.log(SIDES[1])))))
    w, h = _pick(_ASPECTS, rng.random())
    return (longer, round(longer * h / w)) if w >= h else (round(longer * w / h), longer)


def _shape(
    canvas: ImageDraw.ImageDraw, kind: int, centre: tuple[float, float], r: float, fill: Any, ink: Any = None
) -> None:
    """Shape `kind` (disc, square, triangle, diamond, cross, ring) of radius `r`; `ink` outlines it."""
    cx, cy = centre
    width, box = max(1, round(r / 10)), (cx - r, cy - r, cx + r, cy + r)
    if kind == 0:
        canvas.ellipse(box, fill=fill, outline=ink, width=width)
    elif kind == 1:
        square = (cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r)
        canvas.rectangle(square, fill=fill, outline=ink, width=width)
    elif kind == 5:  # a ring 2/3 of the radius wide, inside its outline
        band = max(2, round(0.65 * r))
        if ink is not None:
            canvas.ellipse(box, outline=ink, width=width)
            r -= width
        canvas.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=band)
    else:
        canvas.polygon([(cx + x * r, cy + y * r) for x, y in _POLYGONS[kind]], fill=fill, outline=ink, width=width)


def _centre(x: float, y: float, r: float, size: tuple[int, int]) -> tuple[float, float]:
    """The pixel centre of a shape of radius `r` at `x`, `y` in [0, 1] across the room that keeps it inside."""
    return r + x * max(size[0] - 2 * r, 0.0), r + y * max(size[1] - 2 * r, 0.0)


@functools.cache
def _texture_tile() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((_TEXTURE_TILE, _TEXTURE_TILE, 1), dtype=np.float32)


@functools.cache
def _axis(n: int) -> np.ndarray:
    """Pixel centres of `n` pixels from -0.5 to 0.5, as a float32 column."""
    return ((np.arange(n, dtype=np.float32) + 0.5) / n - 0.5)[:, None]


def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A gradient between two colours drawn uniformly over RGB, in a random direction, with mild texture."""
    (width, height), angle = size, rng.uniform(0.0, 2 * np.pi)
    start, stop = rng.uniform(0.0, 255.0, (2, 3)).astype(np.float32)
    step = (stop - start) / np.float32(abs(np.cos(angle)) + abs(np.sin(angle)))  # from one corner to the other
    rows = _axis(height) * (np.float32(np.sin(angle)) * step) + (start + stop) / 2
    columns = _axis(width) * (np.float32(np.cos(angle)) * step)
    top, left = rng.integers(0, _TEXTURE_TILE - max(size) + 1, 2)
    texture = _texture_tile()[top : top + height, left : left + width] * np.float32(rng.uniform(2.0, 6.0))
    pixels = rows[:, None] + columns[None] + texture
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def draw(signal: Signal, size: int | tuple[int, int], rng: np.random.Generator, mention: bool = False) -> Image.Image:
    """The signal's scene, of side `size` or of (width, height) `size`.

    It is the entity's own picture, or with `mention` another picture of it: the identity object placed and sized
    anew, on a new background among new distractors.
    """
    size = (size, size) if isinstance(size, int) else size
    image, shorter = _background(size, rng), min(size)
    canvas = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 3))):  # distractors
        kind, colour, (x, y) = int(rng.integers(6)), COLOURS[int(rng.integers(6))], rng.random(2)
        r = rng.uniform(0.08, 0.14) * shorter
        _shape(canvas, kind, _centre(x, y, r, size), r, colour)
    x, y, radius, dark = signal.style
    if mention:
        (x, y), radius = rng.random(2), rng.uniform(0.2, 0.3)
    r = radius * shorter
    ink = (20, 20, 20) if dark else (245, 245, 245)
    _shape(canvas, signal.kind, _centre(x, y, r, size), r, COLOURS[signal.attribute], ink)
    return image


def encode(image: Image.Image, ext: str) -> bytes:
    """A drawing as PNG (`ext` "png") or JPEG of quality 90."""
    buffer = io.BytesIO()
    if ext.lower() == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _light_and_texture(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Illumination (a tilted gradient times a vignette, ≈1) and zero-mean texture, both (height, width, 1)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = x / width - 0.5, y / height - 0.5
    angle = rng.uniform(0.0, 2 * np.pi)
    light = 1 + rng.uniform(0.1, 0.4) * (x * np.cos(angle) + y * np.sin(angle))
    light *= rng.uniform(1.0, 1.08) - rng.uniform(0.2, 0.5) * (x * x + y * y)
    coarse = rng.normal(0.0, 1.0, (height // 12 + 2, width // 12 + 2)).astype(np.float32)
    blobs = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    texture = rng.uniform(6.0, 14.0) * blobs + rng.normal(0.0, 4.0, (height, width))
    return light[..., None], texture[..., None]


@functools.cache
def _grain_tile() -> Image.Image:
    noise = np.random.default_rng(0).normal(128.0, _GRAIN_SIGMA, (_GRAIN_TILE, _GRAIN_TILE, 3))
    return Image.fromarray(noise.clip(0, 255).astype(np.uint8))


def _add_grain(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    """`picture` plus sensor grain: a fixed noise tile repeated from a random offset."""
    grain, tile = Image.new("RGB", picture.size), _grain_tile()
    x0, y0 = (-int(v) for v in rng.integers(0, _GRAIN_TILE, 2))
    for top in range(y0, picture.height, _GRAIN_TILE):
        for left in range(x0, picture.width, _GRAIN_TILE):
            grain.paste(tile, (left, top))
    return ImageChops.add(picture, grain, scale=1.0, offset=-128)


def render_photo(signal: Signal, size: tuple[int, int], rng: np.random.Generator, mention: bool = False) -> Image.Image:
    """An upright photo-like RGB picture of `size` of the signal's scene (with `mention`, a mention's scene)."""
    scale = _CANVAS / max(size)
    width, height = max(4, round(size[0] * scale)), max(4, round(size[1] * scale))
    scene = np.asarray(draw(signal, (width, height), rng, mention), dtype=np.float32)
    light, texture = _light_and_texture(width, height, rng)
    canvas = Image.fromarray((scene * light + texture).clip(0, 255).astype(np.uint8))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return _add_grain(canvas.resize(size, Image.Resampling.BILINEAR), rng)


def store_photo(picture: Image.Image, look: str, rng: np.random.Generator) -> bytes:
    """`picture` (upright RGB) encoded as `look` says; JPEG quality is 85–95, PNG uses fast compression."""
    options: dict[str, Any] = {"quality": int(rng.integers(85, 96))}
    if look == "progressive":
        options["progressive"] = True
    elif look == "exif-rotated":
        orientation = int(rng.choice(list(_STORED)))
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        picture, options["exif"] = picture.transpose(_STORED[orientation]), exif
    elif look == "grey":
        picture = picture.convert("L")
    elif look == "cmyk":
        picture = picture.convert("CMYK")
    elif look == "rgba-png":
        alpha = Image.new("L", picture.size)
        ImageDraw.Draw(alpha).ellipse((0, 0, picture.width - 1, picture.height - 1), fill=255)
        picture, options = Image.merge("RGBA", (*picture.split(), alpha)), {"compress_level": 1}
    elif look == "grey16-png":
        picture = Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257)
        options = {"compress_level": 1}
    buffer = io.BytesIO()
    picture.save(buffer, format=LOOKS[look][1], **options)
    return buffer.getvalue()


def photo(signal: Signal, look: str, rng: np.random.Generator, mention: bool = False) -> bytes:
    """A photo-like picture of the signal's scene, of a Commons-like size, encoded as `look` says."""
    return store_photo(render_photo(signal, photo_size(rng), rng, mention), look, rng)
