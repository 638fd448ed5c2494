"""Inference with a CLIP_ND (or plain CLIP) checkpoint, shared by the evaluator, the linker and the MTEB encoder.

`Encoders` writes mentions and entities with the checkpoint's templates and encodes texts and images in batches;
`EncodedInputs` builds the embedding of each row (text, image or both, `Modality`) from those tower outputs, fusing
a text+image row with the model's own fusion (`CLIPNDModel.combine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..progress import progress as progress_bar
from ..tasks import MODALITIES, Modality
from .processing import FastImagePreprocessor, tokenize
from .templates import TextTemplates

__all__ = ["EncodedInputs", "Encoders"]


@dataclass
class EncodedInputs:
    """Tower outputs of texts and images (L2-normalised rows), and the model whose fusion combines them."""

    model: Any
    texts: torch.Tensor
    images: torch.Tensor

    def rows(
        self, text_rows: torch.Tensor, image_rows: torch.Tensor, modality: Modality
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of rows that are text, image or both, for `modality`.

        Row `i` is ``texts[text_rows[i]]`` and/or ``images[image_rows[i]]`` (-1: it has none). A ``"TI"`` row is
        fused by the model's fusion, each distinct (text, image) pair once. A row lacking an input that `modality`
        needs is unusable, and its embedding is zeros.
        """
        has_text, has_image = text_rows >= 0, image_rows >= 0
        if modality == "T":
            return _take(self.texts, text_rows, has_text), has_text
        if modality == "I":
            return _take(self.images, image_rows, has_image), has_image
        usable = has_text & has_image
        if not usable.any():  # e.g. a split without images: no row can be fused
            return _take(self.texts, text_rows, usable), usable
        pairs, inverse = torch.unique(torch.stack([text_rows, image_rows], 1)[usable], dim=0, return_inverse=True)
        fused = self.model.combine(texts=self.texts[pairs[:, 0]], images=self.images[pairs[:, 1]])
        out = fused.new_zeros(len(usable), fused.shape[1])
        out[usable.to(out.device)] = fused[inverse.to(out.device)]
        return out, usable


def _take(table: torch.Tensor, rows: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """Rows of `table` by index, zeros where not `usable` (and everywhere when `table` is empty)."""
    if not len(table):
        return table.new_zeros(len(rows), table.shape[1])
    return table[rows.clamp(min=0)].masked_fill(~usable.to(table.device)[:, None], 0.0)


@dataclass
class Encoders:
    """A model with its tokenizer, image processor and text templates, encoding texts and images in batches."""

    model: Any
    tokenizer: Any
    image_processor: Any
    templates: TextTemplates
    max_length: int
    batch_size: int = 64
    progress: bool = False

    @classmethod
    def for_model(
        cls, model: Any, tokenizer: Any, image_processor: Any, batch_size: int = 64, progress: bool = False
    ) -> Encoders:
        """The encoders of `model`: its config's templates, texts cut at its text tower's context length."""
        templates = TextTemplates.of(model.config)
        max_length = model.config.text_config.max_position_embeddings
        return cls(model, tokenizer, image_processor, templates, max_length, batch_size, progress)

    def __post_init__(self) -> None:
        # The collator's preprocessing (same pixel values as the image processor, faster), RGB conversion included.
        self.preprocess = FastImagePreprocessor(self.image_processor)

    def texts(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts`, batched by length so that little padding is encoded."""
        if not texts:
            return self._empty()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        starts = range(0, len(texts), self.batch_size)
        bar = progress_bar(
            starts, desc=f"Encoding {len(texts)} texts", total=len(starts), unit="batch", show=self.progress
        )
        for start in bar:
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            tokens = tokenize(self.tokenizer, batch, self.max_length)
            device = self.model.device
            chunks.append(self.model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)))
        out = chunks[0].new_empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order, device=out.device)] = torch.cat(chunks)
        return out

    def images(self, images: Sequence[Any]) -> torch.Tensor:
        """Embeddings of `images` (PIL images or encoded bytes), `batch_size` at a time."""
        if not images:
            return self._empty()
        chunks = [
            self.model.encode_image(
                self.preprocess(list(images[start : start + self.batch_size])).to(self.model.device)
            )
            for start in range(0, len(images), self.batch_size)
        ]
        return torch.cat(chunks)

    def embed(
        self, texts: Sequence[str], images: Sequence[Any | None], modality: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of rows, each a text and an image (PIL image or bytes; None: it has none), for
        `modality`: the inputs it needs are encoded for the usable rows only (`EncodedInputs.rows`)."""
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}.")
        usable = [i for i, image in enumerate(images) if modality == "T" or image is not None]
        rows = torch.full((len(images),), -1, dtype=torch.long)
        rows[usable] = torch.arange(len(usable))
        none = torch.full_like(rows, -1)
        encoded = EncodedInputs(
            self.model,
            self.texts([texts[i] for i in usable]) if "T" in modality else self._empty(),
            self.images([images[i] for i in usable]) if "I" in modality else self._empty(),
        )
        return encoded.rows(rows if "T" in modality else none, rows if "I" in modality else none, modality)

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.model.config.projection_dim, device=self.model.device)
