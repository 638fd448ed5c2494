"""m3el_hf.images: identity by content, one orientation and one 8-bit rule, resizing for storage."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
from photos import encoded, rotated_jpeg
from transformers.image_transforms import convert_to_rgb

from m3el_hf.images import (
    JPEG_QUALITY,
    content_key,
    encode,
    encoded_or_open,
    jpeg_may_rotate,
    open_image,
    shrink_to_shorter_side,
    to_8bit,
    to_rgb,
)


def test_open_image_is_datasets_decoding_with_orientation(real_photos):
    from datasets import Image

    data = rotated_jpeg(real_photos["grace_hopper"])
    ours = open_image(data)
    stock = Image().decode_example({"bytes": data, "path": None})
    assert ours.size == stock.size == real_photos["grace_hopper"].size
    assert np.array_equal(np.asarray(ours), np.asarray(stock))


def test_to_8bit_scales_sixteen_bits_instead_of_clipping():
    values = np.array([[0, 257, 32_896, 65_535]], dtype=np.uint16)
    image = PIL.Image.fromarray(values)
    assert image.mode == "I;16"
    assert np.asarray(to_8bit(image)).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(image.convert("L")).tolist() == [[0, 255, 255, 255]]  # PIL's own conversion clips
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 65_535, 32_896]], dtype=np.int32), "I", [0, 255, 128]),
        (np.array([[-10, 0, 90]], dtype=np.int32), "I", [0, 26, 255]),  # outside 16 bits: its own range
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F", [0, 128, 255]),
        (np.array([[2.0, 4.0, 6.0]], dtype=np.float32), "F", [0, 128, 255]),
    ],
)
def test_to_8bit_scales_integer_and_float_images(values, mode, expected):
    image = PIL.Image.fromarray(values)
    assert image.mode == mode
    assert np.asarray(to_8bit(image)).ravel().tolist() == expected


def test_to_rgb_matches_transformers_where_transformers_is_right(real_photos):
    for name in ("logo", "camera", "astronaut"):
        photo = real_photos[name]
        assert np.array_equal(np.asarray(to_rgb(photo)), np.asarray(convert_to_rgb(photo))), name
    palette = real_photos["astronaut"].convert("P", palette=PIL.Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    assert np.array_equal(np.asarray(to_rgb(palette)), np.asarray(convert_to_rgb(palette)))
    cmyk, lab = real_photos["coffee"].convert("CMYK"), real_photos["coffee"].convert("LAB")
    assert np.array_equal(np.asarray(to_rgb(cmyk)), np.asarray(cmyk.convert("RGB")))
    assert np.abs(np.asarray(to_rgb(lab), dtype=int) - np.asarray(real_photos["coffee"], dtype=int)).mean() < 2


def test_shrink_to_shorter_side_is_upright_bicubic_and_never_enlarges(real_photos):
    photo = real_photos["grace_hopper"]  # 512 x 600
    shrunk = shrink_to_shorter_side(rotated_jpeg(photo), 224)
    assert shrunk.size == (224, 262)
    reference = open_image(encoded(photo, "JPEG", quality=95)).resize((224, 262), PIL.Image.Resampling.BICUBIC)
    # Same picture, same orientation: the stored rotation was undone (JPEG noise only).
    assert np.abs(np.asarray(shrunk, dtype=int) - np.asarray(reference, dtype=int)).mean() < 1.5
    small = shrink_to_shorter_side(encoded(photo, "PNG"), 1000)
    assert small.size == photo.size and np.array_equal(np.asarray(small), np.asarray(photo))


def test_draft_decoding_stays_within_the_documented_tolerance(real_photos):
    """JPEGs over twice the target are decoded at a reduced scale: under 1.5 grey levels from a full decode."""
    for name in ("astronaut", "chelsea", "rocket", "retina", "hubble_deep_field", "camera", "grace_hopper"):
        data = encoded(real_photos[name], "JPEG", quality=92)
        full = open_image(data)
        for size in (64, 112, 224):
            fast = shrink_to_shorter_side(data, size)
            reference = full.resize(fast.size, PIL.Image.Resampling.BICUBIC, reducing_gap=None)
            difference = np.abs(np.asarray(fast, dtype=int) - np.asarray(reference, dtype=int))
            assert difference.mean() < 1.5, (name, size, difference.mean())


def test_shrink_converts_modes_before_resizing():
    sixteen = PIL.Image.fromarray(np.full((300, 400), 65_535, dtype=np.uint16))
    shrunk = shrink_to_shorter_side(encoded(sixteen, "PNG"), 100)
    assert (shrunk.mode, shrunk.size) == ("L", (133, 100))
    assert np.asarray(shrunk).min() == 255  # white stays white: scaled, not clipped to black or grey
    palette = PIL.Image.new("P", (300, 200))
    palette.info["transparency"] = 0
    assert shrink_to_shorter_side(encoded(palette, "PNG"), 50).mode == "RGBA"


def test_encode_picks_png_for_transparency_and_jpeg_otherwise(real_photos):
    assert encode(real_photos["logo"])[:8] == b"\x89PNG\r\n\x1a\n"
    jpeg = encode(real_photos["coffee"])
    assert jpeg[:2] == b"\xff\xd8"
    assert jpeg == encoded(real_photos["coffee"], "JPEG", quality=JPEG_QUALITY)
    assert PIL.Image.open(io.BytesIO(encode(real_photos["camera"]))).mode == "L"


def test_extraneous_bytes_between_jpeg_segments_are_skipped_as_pil_does(real_photos):
    data = encoded(real_photos["coffee"], "JPEG")
    app0_end = 4 + int.from_bytes(data[4:6], "big")  # SOI, then the APP0 segment
    padded = data[:app0_end] + b"\x00junk\x00" + data[app0_end:]
    assert not jpeg_may_rotate(padded) and jpeg_may_rotate(rotated_jpeg(real_photos["coffee"]))
    assert np.array_equal(np.asarray(open_image(padded)), np.asarray(open_image(data)))


def test_a_jpeg_with_an_xmp_orientation_may_rotate():
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    plain = encoded(PIL.Image.new("RGB", (30, 20)), "JPEG")
    rotated = encoded(PIL.Image.new("RGB", (30, 20)), "JPEG", xmp=xmp)
    assert open_image(rotated).size == (20, 30)  # datasets applies an XMP orientation too
    assert jpeg_may_rotate(rotated) and not jpeg_may_rotate(plain) and not jpeg_may_rotate(b"\x89PNG")


def test_an_undecoded_image_is_known_by_its_bytes_or_else_its_path(tmp_path, real_photos):
    import hashlib

    data = encoded(real_photos["coffee"], "JPEG")
    (tmp_path / "coffee.jpg").write_bytes(data)
    by_path = {"bytes": None, "path": str(tmp_path / "coffee.jpg")}
    assert content_key(data) == content_key({"bytes": data, "path": "elsewhere.jpg"})
    assert content_key(data) == hashlib.sha256(data).hexdigest()
    assert content_key(by_path) == str(tmp_path / "coffee.jpg")
    assert content_key(data) != content_key(encoded(real_photos["coffee"], "PNG"))
    assert content_key({"bytes": None}) is None
    picture = open_image(data)
    assert content_key(picture) == content_key(picture.copy()) != content_key(picture.convert("L"))
    assert content_key(picture) != content_key(picture.transpose(PIL.Image.Transpose.ROTATE_180))
    assert encoded_or_open({"bytes": data, "path": None}) is data
    opened = encoded_or_open(by_path)
    assert np.array_equal(np.asarray(opened), np.asarray(open_image(data)))
