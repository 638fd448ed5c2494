"""instances: reading and checking images, splits, usable tasks and the knowledge-base tables."""

from __future__ import annotations

import io
import warnings

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pytest

from m3el_hf.data.features import INSTANCE_FEATURES
from m3el_hf.data.image_paths import ImagePathResolver
from m3el_hf.data.instances import KB_SOURCE_COLUMNS, ImageReader, RowBuilder, split_of, usable_tasks
from m3el_hf.data.leak import NEAR_DISTANCE, _distance, fingerprint
from m3el_hf.data.raw_files import M3ELFormatError
from m3el_hf.data.records import RawImage
from m3el_hf.tasks import TASK_NAMES


def test_image_reader_checks_decoding_and_shrinks(tmp_path, make_image):
    make_image(tmp_path / "imgs" / "big.jpg", size=(64, 32))
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"not an image")
    reader = ImageReader(tmp_path)
    out = reader.read(RawImage("f", "u", "/M3EL/imgs/big.jpg"), "movies.json", 3)
    assert out.data == (tmp_path / "imgs" / "big.jpg").read_bytes()
    assert np.array_equal(out.fingerprint, fingerprint(out.data))
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 3: undecodable image: '/M3EL/imgs/bad\.jpg'"):
        reader.read(RawImage("f", "u", "/M3EL/imgs/bad.jpg"), "movies.json", 3)
    with pytest.raises(M3ELFormatError, match=r"record 3: missing image"):
        reader.read(RawImage("f", "u", "/M3EL/imgs/gone.jpg"), "movies.json", 3)
    small = ImageReader(tmp_path, max_image_side=16).read(RawImage("f", "u", "/M3EL/imgs/big.jpg"), "m", 0)

    assert PIL.Image.open(io.BytesIO(small.data)).size == (16, 8)


def test_split_of_is_deterministic_and_close_to_the_ratios():
    keys = [f"{i:016x}" for i in range(4000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02


def test_usable_tasks_follow_the_images_present():
    assert usable_tasks(True, True) == list(TASK_NAMES)
    assert usable_tasks(False, True) == ["T-T", "T-I", "T-TI"]
    assert usable_tasks(True, False) == ["T-T", "I-T", "TI-T"]
    assert usable_tasks(False, False) == ["T-T"]


def test_image_reader_names_an_unreadable_image(tmp_path, monkeypatch, make_image):
    make_image(tmp_path / "imgs" / "a.jpg")

    def denied(self, local):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ImagePathResolver, "read_bytes", denied)
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 2: unreadable image: '/M3EL/imgs/a\.jpg'"):
        ImageReader(tmp_path).read(RawImage("f", "u", "/M3EL/imgs/a.jpg"), "movies.json", 2)


def test_kb_tables_take_an_entity_once_even_when_its_image_comes_later_in_the_batch():
    schema = datasets.Features({name: INSTANCE_FEATURES[name] for name in KB_SOURCE_COLUMNS}).arrow_schema
    image, source = {"bytes": b"jpeg", "path": None}, {"file": "f.jpg", "url": "u"}

    def row(topic, *candidates):
        return {
            "topic": topic,
            "candidates": [{"qid": q, "name": f"name {q}", "description": f"about {q}"} for q, _ in candidates],
            "candidate_images": [image if has else None for _, has in candidates],
            "candidate_image_sources": [source if has else None for _, has in candidates],
        }

    batch = pa.RecordBatch.from_pylist(
        [
            row("movies", ("Q1", False), ("Q2", False)),
            row("movies", ("Q1", True), ("Q3", True)),
            row("books", ("Q1", False)),
        ],
        schema=schema,
    )
    builder = RowBuilder(images=None, columns=KB_SOURCE_COLUMNS)
    kb = pa.concat_tables(builder.kb_tables([batch])).to_pylist()
    assert [(e["topic"], e["qid"], e["image"] is not None) for e in kb] == [
        ("movies", "Q1", True),
        ("movies", "Q3", True),
        ("movies", "Q2", False),
        ("books", "Q1", False),
    ]
    assert kb[0] == {
        "topic": "movies",
        "qid": "Q1",
        "name": "name Q1",
        "description": "about Q1",
        "image": image,
        "image_source": source,
    }
    assert (builder.audit.topic("movies").kb_entities, builder.audit.topic("books").kb_entities) == (3, 1)


def image_bytes(fmt: str, cut: bool = False) -> bytes:
    """Noise as an image file of `fmt`, or its first half."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    data = buffer.getvalue()
    return data[: len(data) // 2] if cut else data


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (image_bytes("JPEG") + b"\0\0\n", None),
        (image_bytes("PNG"), None),
        (image_bytes("GIF"), None),
        (image_bytes("PNG")[:-12], None),  # without its IEND chunk, every pixel still decodes, as stock readers do
        (image_bytes("JPEG", cut=True), "image file is truncated"),
        (image_bytes("PNG", cut=True), "image file is truncated"),
        (image_bytes("GIF", cut=True), "image file is truncated"),
        (image_bytes("GIF")[:5], "not an image file PIL can read"),
        (b"\xff\xd8garbage\xff\xd9", "not an image file PIL can read"),
    ],
)
def test_image_check_decodes_every_pixel_and_refuses_truncated_and_non_image_files(tmp_path, data, problem):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.img").write_bytes(data)
    read = ImageReader(tmp_path).read
    if problem is None:
        assert read(RawImage("f", "u", "/M3EL/imgs/x.img"), "m.json", 0).data == data
    else:
        with pytest.raises(
            M3ELFormatError, match=rf"^m\.json, record 0: undecodable image: '/M3EL/imgs/x\.img' \({problem}"
        ) as error:
            read(RawImage("f", "u", "/M3EL/imgs/x.img"), "m.json", 0)
        assert " at 0x" not in str(error.value)  # reports must be identical across runs


@pytest.mark.parametrize("option", [{"max_image_side": 16}, {"image_size": 16}, {}])
def test_a_cmyk_tiff_is_stored_as_8_bit_rgb_with_or_without_resizing(tmp_path, option):
    path = tmp_path / "imgs" / "cmyk.tif"
    path.parent.mkdir()
    original = PIL.Image.new("RGB", (48, 32), (200, 120, 30))
    original.convert("CMYK").save(path, format="TIFF")
    out = ImageReader(tmp_path, **option).read(RawImage("f", "u", "/M3EL/imgs/cmyk.tif"), "movies.json", 0)
    stored = PIL.Image.open(io.BytesIO(out.data))
    assert stored.mode == "RGB"
    assert stored.size == {"max_image_side": (16, 11), "image_size": (24, 16)}.get(next(iter(option), ""), (48, 32))
    expected = original.convert("CMYK").convert("RGB").getpixel((5, 5))
    tolerance = 3 if option else 0  # resized images are stored as JPEG
    assert all(abs(a - b) <= tolerance for a, b in zip(stored.getpixel((5, 5)), expected, strict=True))


@pytest.mark.parametrize("option", [{}, {"image_size": 16}, {"max_image_side": 16}], ids=["as is", "size", "side"])
@pytest.mark.parametrize("mode", ["RGB", "CMYK", "RGBA"])
def test_an_image_is_opened_and_decoded_once_and_remembered_by_content(
    tmp_path, monkeypatch, real_photos, option, mode
):
    import PIL.ImageFile
    import simplejpeg

    picture = real_photos["coffee"].resize((64, 48))
    path = tmp_path / "imgs" / "x.img"
    path.parent.mkdir()
    picture.convert(mode).save(path, format="PNG" if mode == "RGBA" else "JPEG")
    opens, decodes, headers = [], [], []
    open_, load = PIL.Image.open, PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.Image, "open", lambda *args, **kwargs: opens.append(1) or open_(*args, **kwargs))

    def counted_load(self):
        decodes.extend([1] if self.tile else [])  # tiles left to decode: this call decodes pixels
        return load(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", counted_load)
    # A small plain JPEG: simplejpeg reads its header, and decodes it straight into an array.
    header, decode_jpeg = simplejpeg.decode_jpeg_header, simplejpeg.decode_jpeg
    monkeypatch.setattr(simplejpeg, "decode_jpeg_header", lambda *args: headers.append(1) or header(*args))
    monkeypatch.setattr(
        simplejpeg, "decode_jpeg", lambda *args, **kwargs: decodes.append(1) or decode_jpeg(*args, **kwargs)
    )
    reader = ImageReader(tmp_path, **option)
    first = reader.read(RawImage("f", "u", "/M3EL/imgs/x.img"), "m.json", 0)
    assert (len(opens), len(decodes)) == ((0, 1) if mode == "RGB" and not option else (1, 1))
    assert len(headers) == (1 if mode != "RGBA" else 0)  # a JPEG's header read once, for its size and its decode
    counts = (len(opens), len(decodes), len(headers))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "copy.img").write_bytes(path.read_bytes())  # as the release copies a candidate's file
    again = reader.read(RawImage("f", "u", "/M3EL/other/copy.img"), "m.json", 1)
    assert (len(opens), len(decodes), len(headers)) == counts and again.data == first.data
    assert np.array_equal(again.fingerprint, first.fingerprint)
    monkeypatch.undo()
    if first.data == path.read_bytes() or first.data[:4] == b"\x89PNG":  # stored as it is, or losslessly
        assert np.array_equal(first.fingerprint, fingerprint(first.data))
    else:  # from the resized picture, before its JPEG encoding: within what re-encoding moves
        assert _distance(first.fingerprint, fingerprint(first.data)) <= 4 < NEAR_DISTANCE


@pytest.mark.parametrize("suffix", ["png", "jpg"])  # a plain JPEG's size is read by simplejpeg, not PIL
def test_the_pixel_limit_is_read_from_the_header_and_names_the_image(tmp_path, suffix):
    path = tmp_path / "imgs" / f"wide.{suffix}"
    path.parent.mkdir()
    PIL.Image.new("L", (300, 200)).save(path)
    image = RawImage("f", "u", f"/M3EL/imgs/wide.{suffix}")
    assert ImageReader(tmp_path, max_pixels=60_000).read(image, "movies.json", 4).data == path.read_bytes()
    with pytest.raises(M3ELFormatError) as error:
        ImageReader(tmp_path, max_pixels=59_999).read(image, "movies.json", 4)
    assert str(error.value) == (
        f"movies.json, record 4: image too large: '/M3EL/imgs/wide.{suffix}' is 300x200 = 60,000 pixels, "
        "over the limit of 59,999 (--max-pixels)"
    )
    assert error.value.key == "image_too_large"


@pytest.mark.parametrize("suffix", ["png", "jpg"])  # 300 px: a plain JPEG that PIL decodes for its fingerprint
def test_a_pixel_limit_above_pils_warns_of_no_bomb(tmp_path, monkeypatch, suffix):
    """--max-pixels above PIL's own limit: the image is within ours, and PIL's bomb warning is not printed."""
    path = tmp_path / "imgs" / f"square.{suffix}"
    path.parent.mkdir()
    PIL.Image.new("RGB", (300, 300), (20, 90, 200)).save(path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 60_000)  # PIL warns from 60,000 pixels, refuses from twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = ImageReader(tmp_path, max_pixels=100_000).read(RawImage("f", "u", f"/M3EL/imgs/square.{suffix}"), "m", 0)
        assert read.data == path.read_bytes() and read.fingerprint.shape == (7,)
