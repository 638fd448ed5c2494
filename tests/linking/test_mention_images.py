"""A user's picture (`load_user_image`): decoded by prepare's rule, refused in one line when it cannot be used."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
from photos import bomb_png, encoded, rotated_jpeg

from m3el_hf.images import ImageInputError, load_user_image, open_image
from m3el_hf.linking import EntityLinker


def _same_pixels(a: PIL.Image.Image, b: PIL.Image.Image) -> bool:
    return a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))


def test_every_form_of_a_picture_decodes_as_prepare_does(real_photos, tmp_path):
    data = rotated_jpeg(real_photos["grace_hopper"])
    path = tmp_path / "hopper.jpg"
    path.write_bytes(data)
    upright = open_image(data)
    assert upright.size == real_photos["grace_hopper"].size  # the EXIF orientation is applied
    for given in (data, path, str(path), {"bytes": data, "path": None}, {"bytes": None, "path": str(path)}):
        assert _same_pixels(load_user_image(given), upright)
    sixteen = encoded(PIL.Image.fromarray(np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000), "PNG")
    assert load_user_image(sixteen).mode == open_image(sixteen).mode == "I;16"  # the mode is kept, as datasets does
    assert load_user_image(real_photos["logo"]) is real_photos["logo"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^the image is empty \(0 bytes\), not an image\.$"),
        (b"plain text, not a picture", r"^the image is not an image \(no format PIL reads\)\.$"),
        (encoded(PIL.Image.new("RGB", (64, 64)), "PNG")[:-30], r"^the image cannot be decoded \(.*\); is the file cut"),
        (bomb_png(20_000), r"^the image is too large: Image size \(400000000 pixels\) exceeds limit"),
    ],
)
def test_a_picture_that_cannot_be_used_is_one_line(data, message):
    with pytest.raises(ImageInputError, match=message) as error:
        load_user_image(data)
    assert "\n" not in str(error.value) and " at 0x" not in str(error.value)
    assert isinstance(error.value, ValueError)  # the command line reports it in one line, exit 2


def test_max_pixels_refuses_from_the_header_and_names_the_picture(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(bomb_png(4_000))  # 16 M pixels: under PIL's limit, over ours
    with pytest.raises(ImageInputError, match=rf"^{path} is too large: 4000x4000 = 16,000,000 pixels, over the limit"):
        load_user_image(path, max_pixels=1_000_000)
    with pytest.raises(
        ImageInputError, match=r"^upload\.png is too large: 64x64 = 4,096 pixels, over the limit of 100"
    ):
        load_user_image(PIL.Image.new("RGB", (64, 64)), max_pixels=100, name="upload.png")
    with pytest.raises(ImageInputError, match=rf"^{tmp_path / 'missing.jpg'} cannot be read \(No such file"):
        load_user_image(tmp_path / "missing.jpg")


def test_the_linker_takes_a_rotated_photo_upright_and_refuses_a_cut_one(tiny_clip_path, real_photos):
    linker = EntityLinker.from_pretrained(tiny_clip_path, device="cpu", max_pixels=2_000_000)
    photo = real_photos["grace_hopper"]
    entities = [{"qid": f"Q{i}", "name": name, "description": "a person"} for i, name in enumerate(("Ada", "Grace"))]
    data = rotated_jpeg(photo)
    rotated = linker.link("Grace", image=data, candidates=entities, top_k=2)
    upright = linker.link("Grace", image=open_image(data), candidates=entities, top_k=2)
    sideways = linker.link("Grace", image=PIL.Image.open(io.BytesIO(data)), candidates=entities, top_k=2)
    assert [(e.qid, e.score) for e in rotated] == [(e.qid, e.score) for e in upright]
    assert [e.score for e in rotated] != [e.score for e in sideways]
    with pytest.raises(ImageInputError, match="cannot be decoded"):
        linker.link("Grace", image=encoded(photo, "JPEG")[:5000], candidates=entities)
    with pytest.raises(ImageInputError, match="over the limit of 2,000,000"):
        linker.link("Grace", image=bomb_png(2_000), candidates=entities)
    with pytest.raises(ValueError, match=r"^The mention is empty: give the words that name the entity"):
        linker.link("  ", image=data, candidates=entities)
