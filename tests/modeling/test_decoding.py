"""m3el_hf.modeling.decoding: JPEGs and PNGs decoded straight into arrays give PIL's pixels, or go to PIL."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
from photos import bomb_png, encoded, rotated_jpeg

from m3el_hf.images import encode, open_image, shrink_to_shorter_side, to_rgb
from m3el_hf.modeling.decoding import decode_rgb, direct_size


def with_transparent_corners(photo: PIL.Image.Image) -> PIL.Image.Image:
    """`photo` as RGBA with every alpha value from 0 to 255 in its corners, as synth's RGBA PNGs have."""
    rgba = np.asarray(photo.convert("RGBA")).copy()
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgba[:16, :16, 3] = ramp
    rgba[-16:, -16:, 3] = ramp.T
    return PIL.Image.fromarray(rgba)


def direct_files(real_photos: dict) -> list[bytes]:
    """The bundled photos as files the direct decoders take: JPEGs and 8-bit greyscale, RGB and RGBA PNGs, whole
    and as prepare stores them at 224 px, with the chunks PIL writes for a DPI and a colour profile."""
    files = []
    for photo in real_photos.values():
        rgb = photo.convert("RGB")
        files += [encoded(rgb, "JPEG", quality=90), encoded(photo.convert("L"), "JPEG", quality=85)]
        files += [encoded(rgb, "PNG"), encoded(photo.convert("L"), "PNG", compress_level=1)]
        files += [encoded(with_transparent_corners(photo), "PNG", dpi=(72, 72))]
        files += [encode(shrink_to_shorter_side(files[-1], 224)), encode(shrink_to_shorter_side(files[-5], 224))]
    files.append(encoded(real_photos["coffee"], "PNG", icc_profile=b"\0" * 128, optimize=True))
    return files


def test_direct_decoding_gives_pils_pixels_on_real_photos(real_photos: dict) -> None:
    files = direct_files(real_photos)
    kinds = {(data[:3], open_image(data).mode) for data in files}
    assert kinds == {(b"\xff\xd8\xff", "RGB"), (b"\xff\xd8\xff", "L"), *((b"\x89PN", m) for m in ("L", "RGB", "RGBA"))}
    for data in files:
        reference = np.asarray(to_rgb(open_image(data)))
        assert direct_size(data) == reference.shape[:2]
        decoded = decode_rgb(data)
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, reference)
    # The corners' transparency reached the pixels: composited onto white, not dropped.
    rgba = encoded(with_transparent_corners(real_photos["coffee"]), "PNG")
    assert decode_rgb(rgba)[0, 0].tolist() == [255, 255, 255]
    assert not np.array_equal(decode_rgb(rgba), np.asarray(real_photos["coffee"]))


def _png_with(photo: PIL.Image.Image, **options) -> bytes:
    return encoded(photo, "PNG", **options)


def _text_chunk(key: str, value: str) -> PIL.PngImagePlugin.PngInfo:
    info = PIL.PngImagePlugin.PngInfo()
    info.add_itxt(key, value)
    return info


def test_files_whose_pixels_may_differ_go_to_pil(real_photos: dict) -> None:
    """Orientation (EXIF, XMP), transparency chunks, palettes, 16 bits, CMYK, files cut short and bombs."""
    photo = real_photos["chelsea"]
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    whole = _png_with(photo)
    refused = {
        "EXIF-rotated JPEG": rotated_jpeg(photo),
        "PNG with an eXIf orientation": _png_with(photo, exif=exif),
        "PNG with an XMP orientation": _png_with(photo, pnginfo=_text_chunk("XML:com.adobe.xmp", xmp)),
        "RGB PNG with a transparent colour": _png_with(photo, transparency=(1, 2, 3)),
        "palette PNG": _png_with(photo.convert("P")),
        "16-bit PNG": _png_with(PIL.Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)),
        "CMYK JPEG": encoded(photo.convert("CMYK"), "JPEG"),
        "PNG cut short": whole[: len(whole) // 2],
        "GIF": encoded(photo, "GIF"),
        "bomb": bomb_png(),
    }
    for name, data in refused.items():
        assert direct_size(data) is None, name
    # The orientations are real: PIL turns those pictures.
    assert open_image(refused["PNG with an XMP orientation"]).size == photo.size[::-1]
    assert open_image(refused["PNG with an eXIf orientation"]).size == photo.size[::-1]


def test_pils_pixel_limit_holds(real_photos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [encoded(real_photos["coffee"], "PNG"), encoded(real_photos["coffee"], "JPEG")]
    assert all(direct_size(data) == (400, 600) for data in files)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 400 * 600 - 1)
    assert all(direct_size(data) is None for data in files)


def test_a_file_the_decoder_refuses_gives_none(real_photos: dict) -> None:
    """A header that reads well over data that does not: the caller lets PIL decode what there is."""
    jpeg = encoded(real_photos["coffee"], "JPEG")
    cut = jpeg[: len(jpeg) // 2] + b"\xff\xd9"
    png = bytearray(encoded(real_photos["coffee"], "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 100 : idat + 200] = bytes(100)  # corrupt compressed data, chunks intact
    for data in (cut, bytes(png)):
        assert direct_size(data) == (400, 600)
        assert decode_rgb(data) is None
