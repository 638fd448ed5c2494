import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageOps

from m3el_hf.data.synth_images import (
    COLOURS,
    LOOKS,
    SIDES,
    draw,
    photo,
    photo_size,
    pick_look,
    render_photo,
    store_photo,
)

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
        assert mean_diff(upright, picture) < 6 and mean_diff(stored.resize((400, 300)), picture) > 20
    assert seen == {3, 6, 8}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def ink_centre(image: Image.Image, ink: tuple[int, int, int] = (20, 20, 20)) -> tuple[float, float]:
    """Mean (x, y) of the pixels in exactly the ink colour: the identity object's outline."""
    ys, xs = np.nonzero((np.asarray(image) == ink).all(axis=2))
    assert len(xs) > 20
    return float(xs.mean()), float(ys.mean())


def test_a_drawing_shows_the_identity_object_where_the_style_says():
    sig = Sig(kind=1, attribute=1, style=(0.0, 1.0, 0.25, True))  # a square of radius 16 at (16, 48), dark ink
    image = draw(sig, 64, np.random.default_rng(0))
    assert image.size == (64, 64) and image.getpixel((16, 48)) == COLOURS[1]
    assert ink_centre(image) == pytest.approx((16, 48), abs=0.6)
    light = draw(Sig(kind=0, attribute=3, style=(1.0, 0.0, 0.2, False)), 80, np.random.default_rng(0))
    assert light.getpixel((64, 16)) == COLOURS[3]
    assert ink_centre(light, (245, 245, 245)) == pytest.approx((64, 16), abs=1)


def test_an_entity_picture_is_fixed_and_a_mention_picture_varies_all_but_the_identity():
    sig = Sig(kind=4, attribute=2, style=(0.3, 0.7, 0.25, True))
    own = [draw(sig, 64, np.random.default_rng(seed)) for seed in range(20)]
    mentions = [draw(sig, 64, np.random.default_rng(seed), mention=True) for seed in range(20)]
    assert draw(sig, 64, np.random.default_rng(3)) == own[3]  # deterministic with the generator
    assert {ink_centre(image) for image in own} == {ink_centre(own[0])}  # the object stays where the style says
    centres = np.array([ink_centre(image) for image in mentions])
    assert centres.std(axis=0).min() > 6  # mentions place it anywhere
    sizes = [np.count_nonzero((np.asarray(image) == (20, 20, 20)).all(axis=2)) for image in mentions]
    assert max(sizes) > 1.3 * min(sizes)  # and at any scale
    for image in own + mentions:  # the identity colour is always there
        share = np.mean((np.asarray(image) == COLOURS[2]).all(axis=2))
        assert 0.04 < share < 0.3


def test_backgrounds_tell_nothing_of_the_attribute():
    """Corner colours are spread over RGB alike whatever the attribute (the object rarely reaches a corner)."""
    means = []
    for attribute in range(len(COLOURS)):
        sig = Sig(kind=0, attribute=attribute, style=(0.5, 0.5, 0.2, True))
        corners = np.array(
            [pixels(draw(sig, 32, np.random.default_rng([attribute, i]), mention=True))[0, 0] for i in range(200)]
        )
        assert (corners.std(axis=0) > 55).all() and (np.abs(corners.mean(axis=0) - 127.5) < 20).all()
        means.append(corners.mean(axis=0))
    assert np.ptp(np.array(means), axis=0).max() < 30


def test_photos_show_the_identity_object_in_its_colour():
    sig = Sig(kind=1, attribute=1, style=(0.0, 0.5, 0.25, True))  # a green square at the left edge, dark ink
    picture = pixels(render_photo(sig, (900, 600), np.random.default_rng(0)))
    # On the 160 × 107 canvas the radius is 26.7 and the centre (26.7, 53.5): (150, 300) in the photo.
    centre = np.median(picture[285:315, 135:165].reshape(-1, 3), axis=0)
    assert np.linalg.norm(centre - COLOURS[1]) < 45 and centre[1] == centre.max()
    assert np.median(picture[285:315, 25:35].reshape(-1, 3), axis=0).max() < 70  # the ink outline, 0.85 r to the left


def test_photos_are_deterministic_and_mention_pictures_differ():
    first = photo(Sig(), "jpeg", np.random.default_rng(5))
    assert photo(Sig(), "jpeg", np.random.default_rng(5)) == first
    variant = photo(Sig(), "jpeg", np.random.default_rng(5), mention=True)
    assert variant != first
    assert open_bytes(variant).size == open_bytes(first).size  # the same draws pick the size
