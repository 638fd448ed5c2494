"""leak: perceptual hashes equal imagehash's, and near-duplicates of real photos are told from other photos."""

from __future__ import annotations

import io
import itertools
import random

import imagehash
import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import scipy.fftpack
from photos import encoded, rotated_jpeg

from m3el_hf.data.leak import (
    _CROPS,
    NEAR_DISTANCE,
    FingerprintBatch,
    Fingerprinted,
    LeakDetector,
    _crop_weights,
    _distance,
    _kept_crop_weights,
    fingerprint,
    fingerprints,
    greyscale,
    leak_columns,
    luma,
    picture_fingerprint,
)
from m3el_hf.images import to_rgb


def as_word(hash_: imagehash.ImageHash) -> np.uint64:
    return np.packbits(hash_.hash.ravel()).view(">u8")[0]


def test_hashes_are_imagehash_phash_the_whole_picture_bit_for_bit_the_crops_within_2_bits(real_photos):
    for name, photo in real_photos.items():
        photo = photo.convert("RGB")
        width, height = photo.size
        hashes = picture_fingerprint(photo)
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


IMAGES = (".jpg", ".png")


def one_at_a_time(data: bytes) -> np.ndarray:
    """The fingerprint as computed before batching: PIL decodes (a JPEG at a reduced scale, to no less than 128
    px a side), the thumbnails of one picture, one DCT call for them, numpy's median, bit by bit."""
    with PIL.Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (128, 128))
        image.load()
        grey = to_rgb(PIL.ImageOps.exif_transpose(image)).convert("L")
    width, height = grey.size
    lanczos = PIL.Image.Resampling.LANCZOS
    thumbnails = [np.asarray(grey.resize((32, 32), lanczos), dtype=np.float64)]
    if min(width, height) < 128:
        rows, columns = _crop_weights(height, width)
        thumbnails.extend(np.clip(np.rint(rows @ np.asarray(grey, dtype=np.float64) @ columns), 0, 255))
    else:
        for left, top, right, bottom in _CROPS[1:]:
            box = (int(width * left), int(height * top), width - int(width * right), height - int(height * bottom))
            crop = grey.crop(box).resize((32, 32), lanczos, reducing_gap=2.0)
            thumbnails.append(np.asarray(crop, dtype=np.float64))
    dct = scipy.fftpack.dct(scipy.fftpack.dct(np.stack(thumbnails), axis=1), axis=2)[:, :8, :8].reshape(7, 64)
    bits = dct > np.median(dct, axis=1, keepdims=True)
    return np.array([int("".join("1" if bit else "0" for bit in row), 2) for row in bits], dtype=np.uint64)


def small_variants(photo: PIL.Image.Image) -> dict[str, bytes]:
    """Small encodings of `photo` down every decoding path: JPEGs that libjpeg-turbo decodes straight into an
    array (subsamplings, progressive, greyscale, odd sizes), and those PIL decodes (turned, reduced, PNG)."""
    rgb = photo.convert("RGB")
    out = {}
    for size in ((32, 32), (45, 31), (100, 75), (200, 150), (300, 260), (700, 40)):  # the last: thin
        small = rgb.resize(size)
        out[f"{size} 4:2:0"] = encoded(small, "JPEG", quality=90)
        out[f"{size} 4:4:4"] = encoded(small, "JPEG", quality=95, subsampling=0)
        out[f"{size} 4:2:2 progressive"] = encoded(small, "JPEG", subsampling=1, progressive=True)
        out[f"{size} greyscale"] = encoded(small.convert("L"), "JPEG")
        out[f"{size} turned"] = rotated_jpeg(small, 6)
        out[f"{size} PNG with alpha"] = encoded(photo.convert("RGBA").resize(size), "PNG")
    return out


def test_fingerprints_are_bit_for_bit_those_computed_one_picture_at_a_time(tmp_path, real_photos):
    """Every hash of drawn pictures (synth's), of the bundled photos and of small encodings of them is the
    one the per-picture path gives, whether fingerprinted alone, from the opened file, or in one batch."""
    from m3el_hf.data.synth import SynthConfig, synthesize

    raw = synthesize(SynthConfig(out=tmp_path / "raw", instances=60, seed=0, topics=("movies",)))
    images = {str(p.relative_to(raw)): p.read_bytes() for p in sorted(raw.rglob("*")) if p.suffix.lower() in IMAGES}
    images = {
        **dict(list(images.items())[:150]),
        **{n: encoded(p.convert("RGB"), "JPEG") for n, p in real_photos.items()},
    }
    for name, photo in real_photos.items():
        images.update({f"{name} {how}": data for how, data in small_variants(photo).items()})
    expected = {name: one_at_a_time(data) for name, data in images.items()}
    batched = fingerprints([greyscale(data) for data in images.values()])
    for (name, data), together in zip(images.items(), batched, strict=True):
        assert np.array_equal(fingerprint(data), expected[name]), name
        assert np.array_equal(together, expected[name]), name
        with PIL.Image.open(io.BytesIO(data)) as opened:
            assert np.array_equal(greyscale(data), greyscale(opened)), name


def test_luma_is_pils_conversion_to_greyscale():
    rng = np.random.default_rng(0)
    pixels = np.concatenate(
        [rng.integers(0, 256, (4000, 3)), np.array(list(itertools.product((0, 1, 254, 255), repeat=3)))]
    )
    rgb = pixels.astype(np.uint8).reshape(1, -1, 3)
    assert np.array_equal(luma(rgb), np.asarray(PIL.Image.fromarray(rgb).convert("L")))


def test_a_batch_computes_its_fingerprints_when_asked_or_full_and_then_takes_no_more(real_photos):
    pictures = [np.asarray(p.convert("L").resize((40 + i, 36))) for i, p in enumerate(real_photos.values())]
    expected = fingerprints(pictures)
    batch = FingerprintBatch(size=len(pictures) + 1)
    waiting = [Fingerprinted(b"", batch.add(picture)) for picture in pictures]
    assert batch.is_open
    assert [np.array_equal(w.fingerprint, e) for w, e in zip(waiting, expected, strict=True)] == [True] * len(pictures)
    assert not batch.is_open
    with pytest.raises(ValueError, match="computed"):
        batch.add(pictures[0])
    full = FingerprintBatch(size=2)
    full.add(pictures[0]), full.add(pictures[1])
    assert not full.is_open
    large = np.asarray(real_photos["astronaut"].convert("L"))
    assert np.array_equal(FingerprintBatch().add(large), fingerprints([large])[0])  # computed at once
    thin, kept = pictures[0][:, :1] @ np.ones((1, 900), dtype=np.uint8), _kept_crop_weights.cache_info().currsize
    assert np.array_equal(FingerprintBatch().add(thin), fingerprints([thin])[0])  # at once, its weights not kept
    assert _kept_crop_weights.cache_info().currsize == kept
