"""The tiny offline CLIP checkpoint: loads with stock classes, tokenises sensibly, is reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizerFast,
)

from m3el_hf.modeling.processing import load_processor
from m3el_hf.modeling.tiny import build_tiny_clip, build_tiny_tokenizer, default_corpus


def test_loads_offline_with_stock_classes(tiny_clip_path: Path) -> None:
    model = CLIPModel.from_pretrained(tiny_clip_path)
    assert model.config.projection_dim == 16
    assert model.config.vision_config.image_size == 32
    assert sum(p.numel() for p in model.parameters()) < 150_000
    processor = AutoProcessor.from_pretrained(tiny_clip_path)
    assert isinstance(processor.image_processor, CLIPImageProcessorPil)
    assert isinstance(AutoImageProcessor.from_pretrained(tiny_clip_path, backend="pil"), CLIPImageProcessorPil)
    assert isinstance(CLIPTokenizerFast.from_pretrained(tiny_clip_path), CLIPTokenizerFast)


def test_load_processor_returns_pil_backend(tiny_clip_path: Path) -> None:
    tokenizer, image_processor = load_processor(tiny_clip_path)
    assert isinstance(image_processor, CLIPImageProcessorPil)
    pixels = image_processor(images=Image.new("RGB", (50, 40), "red"), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    assert tokenizer.model_max_length == 77


def test_tokenizer_round_trips_text_without_unknowns(tiny_clip_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_path)
    # Words and characters outside the training corpus must still be encoded byte by byte: CLIP's unk token
    # is its eos token, so an unknown symbol would end the text early for the pooler.
    text = "Titanic : 1997 American film, Zürich Ŝtraße #42!"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    assert len(tokenizer("film novel player")["input_ids"]) == 5  # frequent words are single tokens


def test_special_token_ids_match_config(tiny_clip_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_path)
    text_config = CLIPModel.from_pretrained(tiny_clip_path).config.text_config
    assert text_config.vocab_size == len(tokenizer)
    assert text_config.bos_token_id == tokenizer.bos_token_id
    assert text_config.eos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    assert text_config.eos_token_id != 2  # not the legacy value that switches pooling to argmax


def test_padding_does_not_change_text_embedding(tiny_clip_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_path)
    model = CLIPModel.from_pretrained(tiny_clip_path).eval()
    alone = tokenizer(["red film"], return_tensors="pt")
    padded = tokenizer(["red film", "a much longer novel about a famous player"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(**alone).pooler_output[0]
        actual = model.get_text_features(**padded).pooler_output[0]
    torch.testing.assert_close(actual, expected)


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_same_seed_is_byte_identical(tiny_clip_path: Path, tmp_path: Path) -> None:
    again = build_tiny_clip(tmp_path / "again", seed=0)
    assert _files(again) == _files(tiny_clip_path)


def test_other_seed_changes_weights_not_tokenizer(tiny_clip_path: Path, tmp_path: Path) -> None:
    other = build_tiny_clip(tmp_path / "other", seed=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        assert (other / name).read_bytes() == (tiny_clip_path / name).read_bytes()
    weights, reference = load_file(other / "model.safetensors"), load_file(tiny_clip_path / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert not torch.equal(weights["text_projection.weight"], reference["text_projection.weight"])


def test_global_rng_is_untouched(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_clip(tmp_path, seed=7)
    torch.testing.assert_close(torch.rand(3), expected)


def test_custom_corpus_and_vocab_size() -> None:
    tokenizer = build_tiny_tokenizer(["zebra zebra zebra zoo"] * 3, vocab_size=520)
    assert len(tokenizer) <= 520
    assert len(tokenizer("zebra")["input_ids"]) == 3
    assert build_tiny_tokenizer(default_corpus()).get_vocab() == build_tiny_tokenizer().get_vocab()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"vocab_size": 512}, "vocab_size=512 is too small"), ({"image_size": 30}, "multiple of the patch size")],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tiny_clip(tmp_path, **kwargs)
