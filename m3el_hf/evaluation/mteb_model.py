"""CLIP_ND as an MTEB encoder: its own templates and fusion, so ``mteb.evaluate`` gives ``m3el-hf evaluate``'s numbers.

MTEB hands an encoder batches of the task's columns. On the M³EL tasks (`m3el_hf.evaluation.mteb_tasks`) a
query batch carries ``mention`` and ``sentence`` and a document batch ``title`` (name) and ``body``
(description): the encoder renders them with the checkpoint's ``mention_template`` and entity template, as
training and ``m3el-hf evaluate`` do; on other tasks it encodes MTEB's ``text``. A row with text and image is
fused by the checkpoint's ``fusion`` (mean or weighted sum of the L2-normalised tower outputs, renormalised),
and scores are dot products of the unit vectors, as in the built-in evaluator.

MTEB's own CLIP and SigLIP wrappers fuse differently: they add the raw, unnormalised projections
(``text + image``) and score by cosine, so the tower with the larger norm dominates a TI embedding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from ..data.dataset_card import CITATION
from ..images import content_key
from ..locations import SUMMARY_NAME
from ..modeling.encoders import EncodedInputs, Encoders
from ..modeling.modeling_clipnd import CLIPNDModel
from ..modeling.processing import load_processor
from .mteb_tasks import TASKS

__all__ = ["CLIPNDEncoder", "clipnd_model_meta"]


class CLIPNDEncoder(AbsEncoder):
    """An MTEB encoder over a CLIP_ND (or plain CLIP) checkpoint folder or Hub id."""

    def __init__(
        self,
        model_name: str,
        revision: str | None = None,
        device: str | None = None,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`label` names a local checkpoint in MTEB's results (``local/{label}``; default: its folder name)."""
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        options = {"revision": revision} if revision else {}
        self.model = CLIPNDModel.from_pretrained(model_name, **options).to(self.device).eval()
        self.encoders = Encoders.for_model(self.model, *load_processor(model_name, **options))
        self.mteb_model_meta = clipnd_model_meta(model_name, revision, self.model, label)
        # Tower outputs by content, kept across calls: MTEB encodes a topic's mentions and entities again for
        # every task; these are encoded once, as the built-in evaluator does.
        self.text_cache: dict[str, torch.Tensor] = {}
        self.image_cache: dict[str, torch.Tensor] = {}

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Embed every row of `inputs` (an MTEB dataloader): unit vectors, one row per input row.

        Each distinct text and image is encoded once per encoder (images a batch at a time as they come, texts
        at the end, batched by length), so equal inputs get equal embeddings and their scores tie.
        """
        texts: list[str] = []
        images: list[bytes] = []
        encoders = replace(self.encoders, batch_size=batch_size, progress=show_progress_bar)
        with torch.inference_mode():
            for batch in inputs:
                texts += self._texts(batch) or []
                images += self._images(batch["image"], encoders) if "image" in batch else []
            missing = [text for text in dict.fromkeys(texts) if text not in self.text_cache]
            if missing:
                self.text_cache.update(zip(missing, encoders.texts(missing), strict=True))
            count, modality = len(texts) or len(images), ("T" if texts else "") + ("I" if images else "")
            if not count:
                return torch.empty(0, self.model.config.projection_dim)
            text_rows, text_table = self._table(texts, self.text_cache, count)
            image_rows, image_table = self._table(images, self.image_cache, count)
            return EncodedInputs(self.model, text_table, image_table).rows(text_rows, image_rows, modality)[0].cpu()

    def _images(self, images: list[Any], encoders: Encoders) -> list[bytes]:
        """The content keys of `images` (PIL images); those not seen before are encoded, in one batch."""
        keys = [content_key(image) for image in images]
        missing = {key: image for key, image in zip(keys, images, strict=True) if key not in self.image_cache}
        if missing:
            self.image_cache.update(zip(missing, encoders.images(list(missing.values())), strict=True))
        return keys

    def _table(self, keys: list[Any], cache: dict[Any, torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each of `count` rows' index into a table of the distinct `keys`' cached outputs (-1 without `keys`)."""
        if not keys:
            return torch.full((count,), -1, dtype=torch.long), self.encoders.images([])
        distinct = {key: row for row, key in enumerate(dict.fromkeys(keys))}
        table = torch.stack([cache[key] for key in distinct])
        return torch.tensor([distinct[key] for key in keys], dtype=torch.long), table

    def _texts(self, batch: dict[str, Any]) -> list[str] | None:
        """The batch's texts with the checkpoint's templates, or None for an image-only batch."""
        if "text" not in batch:
            return None
        templates = self.encoders.templates
        if "mention" in batch and "sentence" in batch:
            return [templates.mention_text(m, s) for m, s in zip(batch["mention"], batch["sentence"], strict=True)]
        if "title" in batch and "body" in batch:
            entities = zip(batch["title"], batch["body"], strict=True)
            return [templates.entity_text({"name": name, "description": body}) for name, body in entities]
        return list(batch["text"])

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Dot products of the unit embeddings (the built-in evaluator's scores)."""
        return torch.as_tensor(embeddings1) @ torch.as_tensor(embeddings2).T


def clipnd_model_meta(
    model_name: str, revision: str | None = None, model: CLIPNDModel | None = None, label: str | None = None
) -> ModelMeta:
    """MTEB's description of a CLIP_ND checkpoint; `model` (loaded) fills in its sizes. A folder trained by
    ``m3el-hf train`` (it holds the training summary) declares the M³EL tasks as training data; licence and
    release date are left unknown, as the checkpoint does not state them."""
    config = model.config if model is not None else None
    local = Path(model_name).is_dir()
    name = f"local/{label or Path(model_name).resolve().name}" if local or "/" not in model_name else model_name
    trained = local and (Path(model_name) / SUMMARY_NAME).is_file()
    return ModelMeta(
        loader=CLIPNDEncoder,
        name=name,
        revision=revision or "local",
        release_date=None,
        languages=["eng-Latn"],
        modalities=["image", "text"],
        n_parameters=sum(p.numel() for p in model.parameters()) if model is not None else None,
        memory_usage_mb=None,
        max_tokens=config.text_config.max_position_embeddings if config is not None else 77,
        embed_dim=config.projection_dim if config is not None else None,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers", "safetensors"],
        reference=None if local else f"https://huggingface.co/{model_name}",
        similarity_fn_name=ScoringFunction.DOT_PRODUCT,
        use_instructions=False,
        training_datasets={task.metadata.name for task in TASKS} if trained else None,
        citation=CITATION,
    )
