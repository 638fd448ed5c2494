"""FastImagePreprocessor: the same pixel_values as the PIL image processor, its fallbacks, pickling, the collator."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.processing import FastImagePreprocessor, load_processor, tokenize

# (width, height): smaller and larger than both targets, both orientations, odd sizes where the crop offset
# rounds, and a 1-pixel-wide extreme.
SIZES = [(12, 9), (9, 12), (32, 32), (33, 47), (47, 33), (31, 64), (225, 223), (301, 200), (199, 301), (1, 40)]


def vit_b_32() -> CLIPImageProcessorPil:
    """The settings of openai/clip-vit-base-patch32's preprocessor_config.json, built without a download."""
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": 224},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_convert_rgb=True,
    )


def varied_images(seed: int = 0) -> list[PIL.Image.Image]:
    """Random-noise images of every size in SIZES, cycling through the modes a dataset may hold."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (width, height) in enumerate(SIZES):
        rgba = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
        mode = ("RGB", "L", "RGBA", "P", "CMYK", "LA", "P+transparency", "RGB+transparency")[i % 8]
        if mode == "P+transparency":
            image = rgba.convert("RGB").convert("P")
            image.info["transparency"] = 3
        elif mode == "RGB+transparency":
            image = rgba.convert("RGB")
            image.info["transparency"] = tuple(int(v) for v in np.asarray(image)[0, 0])
        else:
            image = rgba.convert(mode)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def tiny_processor(tiny_clip_path: Path) -> Any:
    return load_processor(tiny_clip_path)[1]


@pytest.mark.parametrize("which", ["tiny", "vit-b-32"])
def test_same_pixel_values_as_the_processor(tiny_processor: Any, which: str) -> None:
    processor = tiny_processor if which == "tiny" else vit_b_32()
    fast = FastImagePreprocessor(processor)
    assert fast.unsupported == ""
    images = varied_images()
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    result = fast(images)
    assert result.dtype == torch.float32 and result.is_contiguous()
    torch.testing.assert_close(result, reference, atol=0, rtol=0)
    # Again, with the output sizes remembered from the first call, and in another order.
    torch.testing.assert_close(fast(images[::-1]), reference.flip(0), atol=0, rtol=0)


def test_same_pixel_values_as_the_processor_on_real_photos(real_photos: dict) -> None:
    """Bundled photographs, whole, cropped to odd sizes, halved, in other modes and as prepared at 224 px."""
    from m3el_hf.images import shrink_to_shorter_side

    processor = vit_b_32()
    fast = FastImagePreprocessor(processor)
    cases = []
    for photo in real_photos.values():
        width, height = photo.size
        cases += [photo, photo.crop((3, 5, width - 2, height - 7)), photo.reduce(2), photo.convert("L")]
        cases += [photo.convert("CMYK"), photo.crop((0, 0, 225, 301)).convert("RGBA")]
        buffer = io.BytesIO()
        photo.convert("RGB").save(buffer, format="JPEG", quality=90)
        cases.append(shrink_to_shorter_side(buffer.getvalue(), 224))
    assert len(cases) == 7 * len(real_photos)
    for image in cases:  # one at a time: the sizes differ
        reference = processor(images=[image], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(fast([image]), reference, atol=0, rtol=0)


@pytest.mark.parametrize(
    "settings",
    [
        # Resized smaller than the crop: transformers pads with zeros.
        {"size": {"shortest_edge": 16}, "crop_size": {"height": 20, "width": 18}},
        {"size": {"height": 24, "width": 40}, "do_center_crop": False, "resample": PILImageResampling.BILINEAR},
        {"size": {"shortest_edge": 30, "longest_edge": 40}, "crop_size": {"height": 30, "width": 30}},
        {"do_normalize": False, "crop_size": {"height": 21, "width": 23}, "size": {"shortest_edge": 25}},
        {"do_rescale": False, "size": {"shortest_edge": 20}, "crop_size": {"height": 20, "width": 20}},
    ],
)
def test_same_pixel_values_for_other_settings(settings: dict[str, Any]) -> None:
    processor = CLIPImageProcessorPil(**settings)
    fast = FastImagePreprocessor(processor)
    assert fast.unsupported == ""
    images = varied_images(seed=1)
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(fast(images), reference, atol=0, rtol=0)


def test_unsupported_setting_falls_back_to_the_processor(caplog: pytest.LogCaptureFixture) -> None:
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 20},
        crop_size={"height": 20, "width": 20},
        do_pad=True,
        pad_size={"height": 24, "width": 26},
    )
    with caplog.at_level(logging.DEBUG, logger="m3el_hf.modeling.processing"):
        fast = FastImagePreprocessor(processor)
    assert fast.unsupported == "do_pad=True"
    images = varied_images()
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    assert reference.shape == (len(images), 3, 24, 26)
    torch.testing.assert_close(fast(images), reference, atol=0, rtol=0)


def test_overridden_step_falls_back_to_the_processor() -> None:
    class Flipped(CLIPImageProcessorPil):
        def center_crop(self, image: np.ndarray, size: Any, **kwargs: Any) -> np.ndarray:
            return super().center_crop(image, size, **kwargs)[..., ::-1]

    processor = Flipped(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    fast = FastImagePreprocessor(processor)
    assert fast.unsupported == "Flipped overrides center_crop"
    images = varied_images()
    torch.testing.assert_close(fast(images), processor(images=images, return_tensors="pt")["pixel_values"])


def test_non_pil_input_falls_back_to_the_processor(tiny_processor: Any) -> None:
    arrays = [np.asarray(image.convert("RGB")) for image in varied_images()]
    reference = tiny_processor(images=arrays, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(FastImagePreprocessor(tiny_processor)(arrays), reference, atol=0, rtol=0)


def test_pickle_round_trip(tiny_processor: Any) -> None:
    fast = FastImagePreprocessor(tiny_processor)
    copy = pickle.loads(pickle.dumps(fast))
    images = varied_images()
    torch.testing.assert_close(copy(images), fast(images), atol=0, rtol=0)


def test_collator_pixel_values_are_the_processors(tiny_processor: Any, tiny_clip_path: Path) -> None:
    tokenizer = load_processor(tiny_clip_path)[0]
    collator = M3ELCollator(tokenizer=tokenizer, image_processor=tiny_processor, tasks=("I-I",))
    images = varied_images()
    rows = [
        {
            "id": f"row-{i}",
            "mention_image": images[i],
            "candidates": [{"qid": f"Q{i + 1}", "name": "n", "description": "d"}],
            "candidate_images": [images[-1 - i]],
            "label": 0,
        }
        for i in range(4)
    ]
    batch = pickle.loads(pickle.dumps(collator))(rows)
    # The collator hands images over unconverted: RGB conversion (alpha on white) is the processor's.
    reference = tiny_processor(images=images[:4], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["mention_pixel_values"], reference, atol=0, rtol=0)
    # Replacing the image processor is honoured, not served from the cached fast path.
    collator.image_processor = vit_b_32()
    assert collator(rows[:1])["mention_pixel_values"].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("max_length", [5, 77])
def test_tokenize_gives_the_tokenizers_tensors(tiny_clip_path: Path, max_length: int) -> None:
    tokenizer = load_processor(tiny_clip_path)[0]
    texts = ["", "a", "Douglas Adams : English author", "Ünïcödé · 東京 and a much longer sentence " * 4, "x y"]
    expected = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    got = tokenize(tokenizer, texts, max_length)
    assert set(got) == {"input_ids", "attention_mask"}
    for key, value in got.items():
        assert value.dtype == expected[key].dtype == torch.int64
        assert torch.equal(value, expected[key]), key
    assert got["input_ids"].shape[1] == (5 if max_length == 5 else expected["input_ids"].shape[1])


@pytest.mark.parametrize("max_length", [5, 77])
def test_tokenize_tokenises_each_distinct_text_once_with_the_same_tensors(tiny_clip_path: Path, max_length: int):
    """Repeated texts (the longest among them) give the ids and masks of tokenising every row."""
    tokenizer = load_processor(tiny_clip_path)[0]
    long = "Ünïcödé · 東京 and a much longer sentence " * 4
    texts = ["x y", long, "a", "x y", "", long, "Douglas Adams : English author", "a", "x y"]
    expected = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    seen: list[list[str]] = []

    class Spy:
        def __call__(self, batch: list[str], **kwargs: Any) -> Any:
            seen.append(list(batch))
            return tokenizer(batch, **kwargs)

    got = tokenize(Spy(), texts, max_length)
    assert seen == [["x y", long, "a", "", "Douglas Adams : English author"]]
    for key, value in got.items():
        assert value.dtype == torch.int64 and value.is_contiguous()
        assert torch.equal(value, expected[key]), key
    # Row by row, each text alone, padded to the longest: the same again.
    alone = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    assert [ids[: len(row)] for ids, row in zip(got["input_ids"].tolist(), alone, strict=True)] == alone
    assert got["attention_mask"].sum(1).tolist() == [len(row) for row in alone]


def test_pixels_then_normalize_equal_the_processor_in_numpy_and_in_torch(tiny_processor: Any) -> None:
    from m3el_hf.modeling.processing import lookup

    fast = FastImagePreprocessor(vit_b_32())
    images = varied_images(seed=2)
    pixels = fast.pixels(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(images), 224, 224, 3)
    reference = vit_b_32()(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(fast.normalize(pixels), reference, atol=0, rtol=0)
    # The accelerator path (torch indexing), run here on the CPU.
    torch.testing.assert_close(lookup(torch.from_numpy(fast.table), pixels), reference, atol=0, rtol=0)
    assert FastImagePreprocessor(tiny_processor).pixels([np.zeros((4, 4, 3), dtype=np.uint8)]) is None


def test_bytes_decoded_directly_give_the_processors_pixels(real_photos: dict) -> None:
    """JPEGs and PNGs, prepared at 224 px or resized, take the direct path; rotated, CMYK or palette ones PIL's."""
    from photos import encoded, rotated_jpeg

    from m3el_hf.images import encode, open_image, shrink_to_shorter_side

    processor = vit_b_32()
    fast = FastImagePreprocessor(processor)
    files = []
    for photo in real_photos.values():
        prepared = encode(shrink_to_shorter_side(encoded(photo.convert("RGB"), "PNG"), 224))
        rgba = np.asarray(photo.convert("RGBA")).copy()
        rgba[:40, :40, 3] = np.arange(1600, dtype=np.uint16).reshape(40, 40) % 256
        transparent = encode(shrink_to_shorter_side(encoded(PIL.Image.fromarray(rgba), "PNG"), 224))
        files += [prepared, encoded(open_image(prepared), "JPEG", quality=90, progressive=True), transparent]
        files.append(encoded(open_image(prepared).convert("L"), "PNG"))
    files += [encode(real_photos["camera"].resize((224, 300))), rotated_jpeg(real_photos["grace_hopper"])]
    files += [encoded(real_photos["coffee"].convert("CMYK"), "JPEG"), encoded(real_photos["coffee"], "JPEG")]
    files += [encoded(open_image(files[0]).convert("P"), "PNG"), encoded(real_photos["coffee"], "PNG")]
    small = real_photos["astronaut"].reduce(4)  # 128 px: enlarged
    files += [encoded(small, "JPEG"), encoded(small.convert("L"), "PNG")]
    direct = [fast._direct_array(data) is not None for data in files]
    # All but the EXIF-rotated JPEG, the CMYK JPEG and the palette PNG.
    assert direct == [True] * (4 * len(real_photos) + 1) + [False, False, True, False, True, True, True]
    assert {data[:4] for data, taken in zip(files, direct, strict=True) if taken} == {b"\xff\xd8\xff\xe0", b"\x89PNG"}
    for data in files:
        reference = processor(images=[open_image(data)], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(fast([data]), reference, atol=0, rtol=0)
    # All at once, as the collator calls it.
    reference = processor(images=[open_image(data) for data in files[:-8]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(fast(files[:-8]), reference, atol=0, rtol=0)


def test_jpegs_the_direct_path_cannot_take_give_the_processors_pixels_through_pil() -> None:
    """A scan cut short (PIL decodes what there is) and an XMP orientation (PIL turns the picture)."""
    from photos import encoded

    from m3el_hf.images import open_image

    processor = vit_b_32()
    fast = FastImagePreprocessor(processor)
    noise = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 300, 3), dtype=np.uint8))
    whole = encoded(noise, "JPEG", quality=90)
    cut = whole[: len(whole) // 2] + b"\xff\xd9"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    turned = encoded(noise, "JPEG", quality=90, xmp=xmp)
    assert fast._direct_array(whole) is not None
    for data in (cut, turned):
        assert fast._direct_array(data) is None
        reference = processor(images=[open_image(data)], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(fast([data]), reference, atol=0, rtol=0)
