"""leak: perceptual hashes equal imagehash's, and near-duplicates of real photos are told from other photos."""

from __future__ import annotations

import itertools
import random

import imagehash
import numpy as np
import pytest
from photos import encoded

from m3el_hf.data.leak import (
    _CROPS,
    NEAR_DISTANCE,
    Fingerprinted,
    LeakDetector,
    _distance,
    _phashes,
    fingerprint,
    leak_columns,
    picture_fingerprint,
)


def as_word(hash_: imagehash.ImageHash) -> np.uint64:
    return np.packbits(hash_.hash.ravel()).view(">u8")[0]


def test_hashes_are_imagehash_phash_the_whole_picture_bit_for_bit_the_crops_within_2_bits(real_photos):
    for name, photo in real_photos.items():
        photo = photo.convert("RGB")
        width, height = photo.size
        hashes = _phashes(photo)
        assert hashes[0] == as_word(imagehash.phash(photo)), name
        for crop, (left, top, right, bottom) in zip(hashes[1:], _CROPS[1:], strict=True):
            box = (int(width * left), int(height * top), width - int(width * right), height - int(height * bottom))
            reference = as_word(imagehash.phash(photo.crop(box)))
            assert bin(int(crop) ^ int(reference)).count("1") <= 2, (name, box)


def variants(photo, rng: random.Random) -> dict[str, bytes]:
    """Copies of `photo` as a release may hold them: re-encoded, resized, greyscale, slightly cropped."""
    width, height = photo.size
    margins = [rng.uniform(0, 0.05) for _ in range(4)]
    box = (
        int(width * margins[0]),
        int(height * margins[1]),
        width - int(width * margins[2]),
        height - int(height * margins[3]),
    )
    return {
        "quality 60": encoded(photo, "JPEG", quality=60),
        "half size": encoded(photo.resize((width // 2, height // 2)), "PNG"),
        "greyscale": encoded(photo.convert("L"), "JPEG", quality=90),
        "cropped": encoded(photo.crop(box).resize((int(width * 0.7), int(height * 0.7))), "JPEG", quality=80),
    }


@pytest.mark.slow
def test_near_duplicates_are_found_and_different_photos_are_not(real_photos):
    photos = {name: photo.convert("RGB") for name, photo in real_photos.items()}
    originals = {name: encoded(photo, "JPEG", quality=95) for name, photo in photos.items()}
    detector, rng = LeakDetector(), random.Random(0)
    for name, photo in photos.items():
        for how, data in variants(photo, rng).items():
            assert detector.check(data, [originals[name]], 0) == ("near", []), (name, how)
        assert detector.check(originals[name], [originals[name]], 0) == ("copy", [])
    distances = [
        _distance(fingerprint(originals[a]), fingerprint(originals[b])) for a, b in itertools.combinations(photos, 2)
    ]
    assert min(distances) > NEAR_DISTANCE + 4  # a margin between different photos and the threshold


def test_a_near_duplicate_among_the_other_candidates_is_listed(real_photos):
    astronaut, coffee, camera = (
        encoded(real_photos[n].convert("RGB"), "JPEG") for n in ("astronaut", "coffee", "camera")
    )
    resized = encoded(real_photos["astronaut"].convert("RGB").resize((256, 256)), "JPEG")
    detector = LeakDetector()
    # The mention shows the astronaut; the gold (index 1) is the coffee: candidate 2 is a near-duplicate.
    assert detector.check(resized, [camera, coffee, astronaut, None], 1) == ("none", [2])
    assert detector.check(astronaut, [camera, coffee, astronaut], 1) == ("none", [2])
    assert detector.check(resized, [astronaut, None], 1) == (None, [0])  # the gold has no image
    assert detector.check(None, [astronaut], 0) == (None, [])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_exif_rotated_copy_is_a_near_duplicate(real_photos, orientation):
    from photos import rotated_jpeg

    photo = real_photos["grace_hopper"]
    assert LeakDetector().check(rotated_jpeg(photo, orientation), [encoded(photo, "JPEG")], 0)[0] == "near"


def test_a_picture_and_its_lossless_encoding_have_one_fingerprint_and_one_verdict(real_photos):
    """What prepare fingerprints from the decode it made equals what is found from the stored bytes."""
    pictures = {name: real_photos[name] for name in ("astronaut", "logo", "camera")}
    stored = {name: encoded(picture, "PNG") for name, picture in pictures.items()}
    for name, picture in pictures.items():
        assert np.array_equal(picture_fingerprint(picture), fingerprint(stored[name])), name
    prints = {name: Fingerprinted(stored[name], picture_fingerprint(p)) for name, p in pictures.items()}
    resized = encoded(pictures["astronaut"].resize((256, 256)), "PNG")
    mention = Fingerprinted(resized, fingerprint(resized))
    candidates = [prints["camera"], None, prints["astronaut"], prints["logo"]]
    as_bytes = [stored["camera"], None, stored["astronaut"], stored["logo"]]
    assert leak_columns(mention, candidates, 2) == ("near", []) == LeakDetector().check(resized, as_bytes, 2)
    assert leak_columns(mention, candidates, 0) == ("none", [2])
    assert leak_columns(prints["logo"], candidates, 3) == ("copy", [])
