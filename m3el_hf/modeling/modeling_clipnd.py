"""CLIP_ND: CLIP with mention and entity encoders for multi-modal entity linking (M³EL).

The model *is* a [`CLIPModel`] (same modules, same state dict keys) plus entity-linking encoders, a
mention × entity forward and the contrastive loss. A saved checkpoint therefore loads in stock transformers
with `CLIPModel.from_pretrained`, no `trust_remote_code`, and gives the same text and image embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPModel
from transformers.utils import ModelOutput

from .batch_checks import check_gold_qids, check_rows
from .configuration_clipnd import CLIPNDConfig
from .loss import ContrastiveMELLoss

__all__ = ["CLIPNDModel", "CLIPNDOutput", "rank_candidates", "score"]

logger = logging.getLogger(__name__)


@dataclass
class CLIPNDOutput(ModelOutput):
    r"""Output of [`CLIPNDModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss` is `True`):
            The symmetric mention ↔ entity contrastive loss ([`ContrastiveMELLoss`]).
        logits_per_mention (`torch.FloatTensor` of shape `(B, E)`):
            `logit_scale * mention_embeds @ entity_embeds.T`: scaled cosine similarity of each mention to each
            entity row of the batch.
        mention_embeds (`torch.FloatTensor` of shape `(B, D)`):
            L2-normalised mention embeddings (text, image or fused, per row).
        entity_embeds (`torch.FloatTensor` of shape `(E, D)`):
            L2-normalised entity embeddings (text, image or fused, per row).
        logit_scale (`torch.FloatTensor` of shape `()`):
            The temperature, already exponentiated: `model.logit_scale.exp()`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_mention: torch.FloatTensor | None = None
    mention_embeds: torch.FloatTensor | None = None
    entity_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class CLIPNDModel(CLIPModel):
    """CLIP fine-tuned contrastively on mentions against entities (name + description, and/or image).

    Loads from any CLIP checkpoint (its config is converted to [`CLIPNDConfig`], entity-linking settings
    overridable as keyword arguments) or from its own checkpoints.

    The forward pass does not read its inputs back from the device: row indices and Qids are checked on the
    host by `M3ELCollator` (see `batch_checks`). Set `model.check_inputs = True` to check them in `encode`,
    `combine` and `forward` too, e.g. to debug a batch built by hand; each check is then a device-to-host sync.

    >>> model = CLIPNDModel.from_pretrained("openai/clip-vit-base-patch32", fusion="mean")  # doctest: +SKIP
    >>> batch = collator(rows)  # doctest: +SKIP
    >>> model(**batch).logits_per_mention.shape  # doctest: +SKIP
    torch.Size([B, E])
    """

    config_class = CLIPNDConfig
    config: CLIPNDConfig
    check_inputs: bool = False

    def __init__(self, config: CLIPNDConfig) -> None:
        if not isinstance(config, CLIPNDConfig):
            config = CLIPNDConfig.from_clip_config(config)
        super().__init__(config)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised projected text embeddings, shape `(N, projection_dim)`."""
        return F.normalize(self.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings, shape `(N, projection_dim)`."""
        return F.normalize(self.get_image_features(pixel_values=pixel_values).pooler_output)

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_rows: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_rows: torch.Tensor | None = None,
        num_rows: int | None = None,
    ) -> torch.Tensor:
        """Embed a batch whose rows are text-only, image-only or text+image, in one pass per tower.

        A row present in both `text_rows` and `image_rows` is fused according to `config.fusion`. Every row is
        L2-normalised. Every row needs a text or an image; this is checked only with `check_inputs`.

        Args:
            input_ids (`torch.LongTensor` of shape `(Nt, L)`, *optional*): Tokenised texts.
            attention_mask (`torch.LongTensor` of shape `(Nt, L)`, *optional*): Their attention mask.
            text_rows (`torch.LongTensor` of shape `(Nt,)`, *optional*):
                Output row of each text; defaults to `arange(Nt)`. No row may appear twice.
            pixel_values (`torch.FloatTensor` of shape `(Ni, 3, H, W)`, *optional*): Processed images.
            image_rows (`torch.LongTensor` of shape `(Ni,)`, *optional*):
                Output row of each image; defaults to `arange(Ni)`. No row may appear twice.
            num_rows (`int`, *optional*):
                Number of output rows; defaults to one past the largest row index.

        Returns:
            `torch.FloatTensor` of shape `(num_rows, projection_dim)`.
        """
        texts = self.encode_text(input_ids, attention_mask) if input_ids is not None else None
        images = self.encode_image(pixel_values) if pixel_values is not None else None
        return self.combine(texts, text_rows, images, image_rows, num_rows)

    def combine(
        self,
        texts: torch.Tensor | None = None,
        text_rows: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_rows: torch.Tensor | None = None,
        num_rows: int | None = None,
    ) -> torch.Tensor:
        """Place already-encoded text and image embeddings in their rows, fusing rows that have both.

        The second half of [`~CLIPNDModel.encode`], for callers that cache tower outputs (evaluation encodes
        each unique text and image once). Arguments are as in `encode`, with `texts` `(Nt, D)` and `images`
        `(Ni, D)` the L2-normalised outputs of `encode_text` and `encode_image`.
        """
        text_rows = _default_rows(texts, text_rows, "text_rows")
        image_rows = _default_rows(images, image_rows, "image_rows")
        num_rows = _num_rows(num_rows, text_rows, image_rows)
        if self.check_inputs:
            check_rows(text_rows, image_rows, num_rows)
        reference = texts if texts is not None else images
        device, dtype = (self.device, self.dtype) if reference is None else (reference.device, reference.dtype)
        has_text = _row_mask(text_rows, num_rows, device)
        has_image = _row_mask(image_rows, num_rows, device)

        out = torch.zeros(num_rows, self.config.projection_dim, device=device, dtype=dtype)
        text_weight = self.config.fusion_text_weight if self.config.fusion == "weighted" else 0.5
        # A row's weight only matters when it is fused: a single modality is renormalised anyway, and keeping
        # weight 1 there avoids a zero vector (hence NaN) when fusion_text_weight is 0 or 1.
        if texts is not None:
            weights = torch.where(has_image[text_rows], text_weight, 1.0).to(dtype)
            out = out.index_add(0, text_rows, texts * weights[:, None])
        if images is not None:
            weights = torch.where(has_text[image_rows], 1.0 - text_weight, 1.0).to(dtype)
            out = out.index_add(0, image_rows, images * weights[:, None])
        return F.normalize(out)

    def forward(
        self,
        mention_input_ids: torch.Tensor | None = None,
        mention_attention_mask: torch.Tensor | None = None,
        mention_text_rows: torch.Tensor | None = None,
        mention_pixel_values: torch.Tensor | None = None,
        mention_image_rows: torch.Tensor | None = None,
        entity_input_ids: torch.Tensor | None = None,
        entity_attention_mask: torch.Tensor | None = None,
        entity_text_rows: torch.Tensor | None = None,
        entity_pixel_values: torch.Tensor | None = None,
        entity_image_rows: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mention_qids: torch.Tensor | None = None,
        entity_qids: torch.Tensor | None = None,
        num_mentions: int | None = None,
        num_entities: int | None = None,
        return_loss: bool = False,
        **kwargs: Any,
    ) -> CLIPNDOutput:
        r"""Embed the mentions and entities of a batch and score every mention against every entity row.

        The `mention_*` / `entity_*` arguments are [`encode`]'s, one set per side. Other batch keys (e.g.
        `task_ids`, `num_dropped`) are accepted and ignored, so a `Trainer` can pass the whole batch.

        Args:
            labels (`torch.LongTensor` of shape `(B,)`, *optional*):
                Row of each mention's gold entity among the `E` entity rows; needed with `return_loss`.
            mention_qids (`torch.LongTensor` of shape `(B,)`, *optional*):
                Gold entity id of each mention; needed with `return_loss`.
            entity_qids (`torch.LongTensor` of shape `(E,)`, *optional*):
                Entity id of each entity row; needed with `return_loss`.
            num_mentions (`int`, *optional*):
                `B`; defaults to `len(mention_qids)`, else `len(labels)`, else inferred from the rows.
            num_entities (`int`, *optional*):
                `E`; defaults to `len(entity_qids)`, else inferred from the rows.
            return_loss (`bool`, *optional*, defaults to `False`):
                Whether to compute the contrastive loss.
        """
        if num_mentions is None:
            num_mentions = _length(mention_qids if mention_qids is not None else labels)
        if num_entities is None:
            num_entities = _length(entity_qids)
        mention_embeds = self.encode(
            mention_input_ids,
            mention_attention_mask,
            mention_text_rows,
            mention_pixel_values,
            mention_image_rows,
            num_rows=num_mentions,
        )
        entity_embeds = self.encode(
            entity_input_ids,
            entity_attention_mask,
            entity_text_rows,
            entity_pixel_values,
            entity_image_rows,
            num_rows=num_entities,
        )
        logit_scale = self.logit_scale.exp()
        loss = None
        if return_loss:
            loss = self._contrastive_loss(mention_embeds, entity_embeds, labels, mention_qids, entity_qids, logit_scale)
        return CLIPNDOutput(
            loss=loss,
            logits_per_mention=logit_scale * mention_embeds @ entity_embeds.T,
            mention_embeds=mention_embeds,
            entity_embeds=entity_embeds,
            logit_scale=logit_scale,
        )

    def _contrastive_loss(
        self,
        mention_embeds: torch.Tensor,
        entity_embeds: torch.Tensor,
        labels: torch.Tensor | None,
        mention_qids: torch.Tensor | None,
        entity_qids: torch.Tensor | None,
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        required = {"labels": labels, "mention_qids": mention_qids, "entity_qids": entity_qids}
        missing = [name for name, value in required.items() if value is None]
        if missing:
            raise ValueError(
                f"CLIPNDModel.forward(return_loss=True) needs {', '.join(missing)}; pass the batch of "
                "`M3ELCollator`, which provides labels, mention_qids and entity_qids."
            )
        if self.check_inputs:
            check_gold_qids(labels, mention_qids, entity_qids)
        # Built per call so that it follows `config.mask_duplicate_qids`; it holds no parameters or state.
        loss_fn = ContrastiveMELLoss(mask_duplicate_qids=self.config.mask_duplicate_qids)
        return loss_fn(mention_embeds, entity_embeds, labels, mention_qids, entity_qids, logit_scale)


def score(mention_embeds: torch.Tensor, entity_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every mention to every entity.

    Args:
        mention_embeds (`torch.Tensor` of shape `(B, D)`): Mention embeddings (normalised or not).
        entity_embeds (`torch.Tensor` of shape `(E, D)`): Entity embeddings (normalised or not).

    Returns:
        `torch.Tensor` of shape `(B, E)`, values in [-1, 1].

    >>> score(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([[1., 0.]])
    """
    return F.normalize(mention_embeds, dim=-1) @ F.normalize(entity_embeds, dim=-1).T


def rank_candidates(
    mention_embeds: torch.Tensor, candidate_embeds: torch.Tensor, candidate_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cosine similarity of each mention to each of its own candidates, any of the nine tasks.

    A candidate that cannot be scored for the task (e.g. no image in an `*-I` task, or padding) gets `-inf`,
    so it ranks last and never counts as a hit.

    Args:
        mention_embeds (`torch.Tensor` of shape `(B, D)`): One embedding per mention.
        candidate_embeds (`torch.Tensor` of shape `(B, C, D)`): Each mention's candidates, padded to `C`.
        candidate_mask (`torch.BoolTensor` of shape `(B, C)`, *optional*): `False` where a candidate is unusable.

    Returns:
        `torch.Tensor` of shape `(B, C)`; `scores.argmax(-1)` is the predicted candidate.

    >>> rank_candidates(torch.eye(2), torch.eye(2).expand(2, 2, 2), torch.tensor([[True, False], [True, True]]))
    tensor([[1., -inf],
            [0., 1.]])
    """
    if mention_embeds.dim() != 2 or candidate_embeds.dim() != 3 or len(mention_embeds) != len(candidate_embeds):
        raise ValueError(
            "rank_candidates expects mention_embeds of shape (B, D) and candidate_embeds of shape (B, C, D); got "
            f"{tuple(mention_embeds.shape)} and {tuple(candidate_embeds.shape)}."
        )
    scores = torch.einsum("bd,bcd->bc", F.normalize(mention_embeds, dim=-1), F.normalize(candidate_embeds, dim=-1))
    if candidate_mask is not None:
        scores = scores.masked_fill(~candidate_mask.bool(), float("-inf"))
    return scores


def _length(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else len(tensor)


def _default_rows(embeds: torch.Tensor | None, rows: torch.Tensor | None, name: str) -> torch.Tensor | None:
    if embeds is None:
        if rows is not None and rows.numel():
            raise ValueError(f"encode(): {name} has {rows.numel()} rows but no matching inputs were passed.")
        return None
    if rows is None:
        return torch.arange(len(embeds), device=embeds.device)
    if rows.shape != (len(embeds),):
        raise ValueError(
            f"encode(): {name} must have shape ({len(embeds)},), one output row per input, got {tuple(rows.shape)}."
        )
    return rows.to(device=embeds.device, dtype=torch.long)


def _num_rows(num_rows: int | None, text_rows: torch.Tensor | None, image_rows: torch.Tensor | None) -> int:
    if num_rows is not None:
        return int(num_rows)
    highest = [int(rows.max()) for rows in (text_rows, image_rows) if rows is not None and rows.numel()]
    return max(highest) + 1 if highest else 0


def _row_mask(rows: torch.Tensor | None, num_rows: int, device: torch.device) -> torch.Tensor:
    """Boolean `(num_rows,)` mask of the rows in `rows`, computed on the device without reading them back."""
    mask = torch.zeros(num_rows, dtype=torch.bool, device=device)
    return mask if rows is None else mask.index_fill(0, rows, True)
