"""Images of synthetic releases: small drawings, or photo-like pictures of Wikimedia-Commons-like sizes and formats.

Both show an entity's signal: a background colour chosen by its attribute and a shape chosen by its
type, placed and sized by the entity (centre as fractions of the width and height, radius as a
fraction of the shorter side).

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
"""Background colour per attribute index."""

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
_GRAIN_TILE, _GRAIN_SIGMA = 256, 5.0
# Stored pixels per EXIF orientation: `ImageOps.exif_transpose` undoes these.
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


class Signal(Protocol):
    """What an image shows: an entity's type (`kind`), attribute and placement (`style`)."""

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


def _layout(signal: Signal, rng: np.random.Generator | None) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Centre, radius, background and ink colour; with `rng`, jittered and colour-shifted."""
    cx, cy, r, dark = signal.style
    bg, ink = np.array(COLOURS[signal.attribute]), np.array((20, 20, 20) if dark else (245, 245, 245))
    if rng is not None:
        cx, cy = cx + rng.uniform(-0.06, 0.06), cy + rng.uniform(-0.06, 0.06)
        r *= rng.uniform(0.85, 1.15)
        bg, ink = bg + rng.integers(-25, 26, 3), ink + rng.integers(-25, 26, 3)
    return cx, cy, r, bg, ink


def _shape(draw: ImageDraw.ImageDraw, kind: int, centre: tuple[float, float], r: float, fill: Any) -> None:
    cx, cy = centre
    if kind == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == 1:
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=fill)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif kind == 3:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif kind == 4:
        draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)
        draw.rectangle((cx - r / 3, cy - r, cx + r / 3, cy + r), fill=fill)
    else:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(r / 3)))


def draw(signal: Signal, size: int, rng: np.random.Generator | None = None) -> Image.Image:
    """The signal's square drawing; with `rng`, a jittered, colour-shifted, noisy variant of it."""
    cx, cy, r, bg, ink = _layout(signal, rng)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in bg.clip(0, 255)))
    _shape(
        ImageDraw.Draw(image), signal.kind, (cx * size, cy * size), r * size, tuple(int(v) for v in ink.clip(0, 255))
    )
    if rng is None:
        return image
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 10.0, (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


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


def render_photo(signal: Signal, size: tuple[int, int], rng: np.random.Generator, jitter: bool = False) -> Image.Image:
    """An upright photo-like RGB picture of `size` showing the signal; with `jitter`, a varied rendering."""
    scale = _CANVAS / max(size)
    width, height = max(4, round(size[0] * scale)), max(4, round(size[1] * scale))
    cx, cy, r, bg, ink = _layout(signal, rng if jitter else None)
    mask = Image.new("L", (width, height))
    _shape(ImageDraw.Draw(mask), signal.kind, (cx * width, cy * height), r * min(width, height), 255)
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)[..., None] / 255
    light, texture = _light_and_texture(width, height, rng)
    pixels = (bg * (1 - m) + ink * m) * light + texture * (1 - 0.6 * m)
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
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


def photo(signal: Signal, look: str, rng: np.random.Generator, jitter: bool = False) -> bytes:
    """A photo-like picture of the signal, of a Commons-like size, encoded as `look` says."""
    return store_photo(render_photo(signal, photo_size(rng), rng, jitter), look, rng)
