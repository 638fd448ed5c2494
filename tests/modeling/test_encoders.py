"""EncodedInputs and Encoders: rows that are text, image or both, embedded from encoded inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from m3el_hf.modeling.encoders import EncodedInputs, Encoders
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor


class _MeanFusion:
    """A model's `combine` as CLIP_ND's mean fusion, counting the pairs it fuses."""

    def __init__(self) -> None:
        self.fused = 0

    def combine(self, texts: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        self.fused += len(texts)
        return F.normalize(texts * 0.5 + images * 0.5)


def test_rows_of_each_modality() -> None:
    texts, images = F.normalize(torch.randn(3, 4)), F.normalize(torch.randn(2, 4))
    model = _MeanFusion()
    inputs = EncodedInputs(model, texts, images)
    text_rows, image_rows = torch.tensor([0, 2, -1, 0, 1]), torch.tensor([1, -1, 0, 1, 1])

    embedded, usable = inputs.rows(text_rows, image_rows, "T")
    assert usable.tolist() == [True, True, False, True, True]
    assert torch.equal(embedded[[0, 1, 3, 4]], texts[[0, 2, 0, 1]]) and not embedded[2].any()

    embedded, usable = inputs.rows(text_rows, image_rows, "I")
    assert usable.tolist() == [True, False, True, True, True] and not embedded[1].any()
    assert torch.equal(embedded[[0, 2, 3, 4]], images[[1, 0, 1, 1]])

    embedded, usable = inputs.rows(text_rows, image_rows, "TI")
    assert usable.tolist() == [True, False, False, True, True] and not embedded[[1, 2]].any()
    assert model.fused == 2  # rows 0 and 3 are the same pair: fused once
    for row, (t, i) in ((0, (0, 1)), (3, (0, 1)), (4, (1, 1))):
        assert torch.allclose(embedded[row], F.normalize(texts[t] + images[i], dim=0))


def test_no_row_usable_and_empty_tables() -> None:
    inputs = EncodedInputs(_MeanFusion(), torch.empty(0, 4), torch.empty(0, 4))
    for modality in ("T", "I", "TI"):
        embedded, usable = inputs.rows(torch.full((2,), -1), torch.full((2,), -1), modality)
        assert embedded.shape == (2, 4) and not embedded.any() and not usable.any()


def test_embed_encodes_only_what_the_modality_takes(tiny_clip_path: Path) -> None:
    model = CLIPNDModel.from_pretrained(tiny_clip_path).eval()
    encoders = Encoders.for_model(model, *load_processor(tiny_clip_path), batch_size=2)
    assert encoders.max_length == model.config.text_config.max_position_embeddings
    picture = Image.new("RGB", (30, 40), (200, 30, 90))
    texts, images = ["a : b", "c : d", "e : f"], [picture, None, picture]
    with torch.inference_mode():
        alone = encoders.texts(texts)
        embedded, usable = encoders.embed(texts, images, "T")
        assert usable.all() and torch.equal(embedded, alone)
        embedded, usable = encoders.embed(texts, images, "TI")
        assert usable.tolist() == [True, False, True] and not embedded[1].any()
        fused = model.combine(texts=encoders.texts([texts[0]]), images=encoders.images([picture]))
        assert torch.allclose(embedded[0], fused[0], atol=1e-6)
    with pytest.raises(ValueError, match="Unknown modality 'X'"):
        encoders.embed(texts, images, "X")
