import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageOps

from m3el_hf.data.synth_images import LOOKS, SIDES, photo, photo_size, pick_look, render_photo, store_photo

EXPECTED = {  # look: (format, mode)
    "jpeg": ("JPEG", "RGB"),
    "progressive": ("JPEG", "RGB"),
    "exif-rotated": ("JPEG", "RGB"),
    "grey": ("JPEG", "L"),
    "cmyk": ("JPEG", "CMYK"),
    "rgba-png": ("PNG", "RGBA"),
    "grey16-png": ("PNG", "I;16"),
}


@dataclass(frozen=True)
class Sig:
    kind: int = 2
    attribute: int = 4
    style: tuple[float, float, float, bool] = (0.42, 0.58, 0.3, True)


def open_bytes(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_looks_follow_the_stated_shares():
    assert sum(share for share, _ in LOOKS.values()) == 100
    counts = Counter(pick_look((i + 0.5) / 1000) for i in range(1000))
    assert counts == {look: 10 * share for look, (share, _) in LOOKS.items()}
    assert LOOKS["jpeg"][0] == 71 and LOOKS["cmyk"][0] == LOOKS["grey16-png"][0] == 2


def test_photo_sizes_are_commons_like():
    rng = np.random.default_rng(0)
    sizes = [photo_size(rng) for _ in range(3000)]
    longer = np.array([max(size) for size in sizes])
    ratios = np.array([w / h for w, h in sizes])
    assert SIDES == (300, 3000) and longer.min() >= 300 and longer.max() <= 3000
    assert 850 <= np.median(longer) <= 1100
    assert np.mean(longer < 600) > 0.25 and np.mean(longer > 1500) > 0.15  # log-uniform: both tails
    assert 0.2 < np.mean(ratios < 0.95) < 0.35  # portraits
    assert 0.5 < np.mean(ratios > 1.05) < 0.7  # landscapes and panoramas
    assert 0.05 < np.mean(np.abs(ratios - 1) < 0.01) < 0.15  # squares
    assert np.mean(ratios > 2.9) > 0.01 and ratios.max() <= 3.01  # panoramas up to 3:1


@pytest.mark.parametrize("look", list(LOOKS))
def test_each_look_is_stored_in_its_format_and_mode(look):
    picture = render_photo(Sig(), (400, 300), np.random.default_rng(1))
    assert picture.mode == "RGB" and picture.size == (400, 300)
    image = open_bytes(store_photo(picture, look, np.random.default_rng(2)))
    assert (image.format, image.mode) == EXPECTED[look]
    assert bool(image.info.get("progressive")) == (look == "progressive")
    assert (image.getexif().get(0x0112) in (3, 6, 8)) == (look == "exif-rotated")
    upright = ImageOps.exif_transpose(image)
    if look == "grey16-png":
        values = np.asarray(image)
        assert values.max() > 255 and not (values % 257).any()  # 8-bit values ×257: the full 16-bit range
        assert np.array_equal(values // 257, np.asarray(picture.convert("L")))
    elif look == "grey":
        assert mean_diff(image, picture.convert("L")) < 3
    else:
        assert mean_diff(upright.convert("RGB"), picture) < 6  # JPEG loses some grain
    if look == "rgba-png":  # transparent corners, opaque centre
        alpha = image.getchannel("A")
        assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((200, 150)) == 255
        assert 0.15 < np.mean(np.asarray(alpha) == 0) < 0.3


def test_exif_rotated_photos_transpose_back_to_upright():
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        picture = render_photo(Sig(), (400, 300), rng)
        stored = open_bytes(store_photo(picture, "exif-rotated", rng))
        orientation = stored.getexif()[0x0112]
        seen.add(orientation)
        assert stored.size == ((300, 400) if orientation in (6, 8) else (400, 300))
        upright = ImageOps.exif_transpose(stored)
        assert upright.size == (400, 300)
        assert mean_diff(upright, picture) < 6 and mean_diff(stored.resize((400, 300)), picture) > 30
    assert seen == {3, 6, 8}


def test_photos_show_the_layout_and_colour():
    sig = Sig(kind=1, attribute=1, style=(0.3, 0.5, 0.2, True))  # dark square left of centre on green
    picture = np.asarray(render_photo(sig, (900, 600), np.random.default_rng(0)), dtype=np.float32)
    assert picture[300, 270].max() < 60  # inside the square (centre x 0.3 · 900)
    background = picture[300, 700]
    assert np.linalg.norm(background - (40, 160, 60)) < 45 and background[1] == background.max()


def test_photos_are_deterministic_and_variants_differ():
    first = photo(Sig(), "jpeg", np.random.default_rng(5))
    assert photo(Sig(), "jpeg", np.random.default_rng(5)) == first
    variant = photo(Sig(), "jpeg", np.random.default_rng(5), jitter=True)
    assert variant != first
    assert open_bytes(variant).size == open_bytes(first).size  # the same draws pick the size
