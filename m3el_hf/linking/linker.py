"""Linking new mentions: `EntityLinker` embeds a mention (text, image or both) and ranks entities for it.

The embeddings are the evaluator's (`m3el_hf.modeling.encoders`): the checkpoint's own mention and entity
templates, its fast image path and its fusion (`CLIPNDModel.combine`); a score is the inner product of
the mention's and the entity's embeddings, as in ``m3el-hf evaluate``. An entity lacking an input its modality
needs (an image, for ``"I"`` and ``"TI"``) scores ``-inf``: it ranks last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch

from ..images import content_key, encoded_or_open, load_user_image, open_image
from ..modeling.encoders import Encoders
from ..modeling.modeling_clipnd import CLIPNDModel
from ..modeling.processing import load_processor
from ..tasks import MODALITIES
from .checks import encoder_identity

if TYPE_CHECKING:
    from .index import EntityIndex

__all__ = ["EntityLinker", "LinkedEntity", "Mention", "as_pil"]

ImageLike = PIL.Image.Image | bytes | str | Path | Mapping[str, Any]


@dataclass(frozen=True)
class Mention:
    """A mention to link: its surface form, its context sentence and its picture (any may be missing)."""

    mention: str
    sentence: str | None = None
    image: ImageLike | None = None


@dataclass(frozen=True)
class LinkedEntity:
    """One ranked entity: 1-based `rank`, the entity's fields, its `score` (inner product of embeddings) and its
    picture, `image`, decoded when first read from what the KB stores (`stored_image`)."""

    rank: int
    qid: str
    name: str
    description: str
    score: float
    topic: str | None = None
    stored_image: ImageLike | None = field(default=None, repr=False)

    @cached_property
    def image(self) -> PIL.Image.Image | None:
        """The entity's picture, decoded as `datasets` decodes it; None if it has none."""
        return None if self.stored_image is None else as_pil(self.stored_image)


class EntityLinker:
    """Links mentions to entities with a CLIP_ND (or plain CLIP) checkpoint.

    >>> linker = EntityLinker.from_pretrained("runs/clipnd/final")  # doctest: +SKIP
    >>> linker.link("Paris", sentence="Paris is a French city.", candidates=kb_rows)[0].qid  # doctest: +SKIP
    'Q90'
    """

    def __init__(
        self,
        model: CLIPNDModel,
        tokenizer: Any,
        image_processor: Any,
        batch_size: int = 64,
        max_pixels: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.encoders = Encoders.for_model(model, tokenizer, image_processor, batch_size)
        self.checkpoint = str(getattr(model, "name_or_path", "") or "")
        self.max_pixels = max_pixels
        """Most pixels a mention's picture may have (`m3el_hf.images.load_user_image`; default PIL's limit)."""

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What makes this linker's embeddings what they are (`m3el_hf.linking.checks.encoder_identity`), as an
        index records it: the weights' fingerprint, the width, the templates and the fusion."""
        templates = self.encoders.templates
        return encoder_identity(self.model, templates.mention_template, templates.entity_text_template)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str | Path, device: str | None = None, max_pixels: int | None = None, **kwargs: Any
    ) -> EntityLinker:
        """Load a checkpoint folder or Hub id with its tokenizer and image processor (`kwargs` go to both)."""
        model = CLIPNDModel.from_pretrained(checkpoint, **kwargs)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, *load_processor(checkpoint, **kwargs), max_pixels=max_pixels)

    @torch.inference_mode()
    def embed_mentions(self, mentions: Sequence[Mention], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of `mentions` for `modality`; a mention lacking a needed input is unusable.

        A mention's picture is checked and decoded by `m3el_hf.images.load_user_image` (`ImageInputError` when
        it cannot be used), where the modality takes it.
        """
        texts = [self.encoders.templates.mention_text(m.mention, m.sentence) for m in mentions]
        images = [
            load_user_image(m.image, self.max_pixels) if m.image is not None and modality != "T" else m.image
            for m in mentions
        ]
        return self._embed(texts, images, modality)

    @torch.inference_mode()
    def embed_entities(self, entities: Sequence[Mapping[str, Any]], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of entities (``name``, ``description``, optional ``image``) for `modality`."""
        texts = [self.encoders.templates.entity_text(entity) for entity in entities]
        return self._embed(texts, [entity.get("image") for entity in entities], modality)

    def _embed(self, texts: list[str], images: list[Any], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Files are read only where the modality takes the image.
        decoded = [None if image is None or modality == "T" else _as_image(image) for image in images]
        return self.encoders.embed(texts, decoded, modality)

    def link(
        self,
        mention: str,
        sentence: str | None = None,
        image: ImageLike | None = None,
        candidates: Sequence[Mapping[str, Any]] | None = None,
        index: EntityIndex | None = None,
        top_k: int = 5,
        mention_modality: str | None = None,
        entity_modality: str | None = None,
        allow_other_checkpoint: bool = False,
    ) -> list[LinkedEntity]:
        """The `top_k` entities for one mention, best first: among `candidates` (dicts with ``qid``, ``name``,
        ``description`` and optionally ``image``) or in `index`.

        The mention's modality defaults to ``"TI"`` with an image, else ``"T"``; the entities' to the index's,
        or ``"TI"`` when every candidate has an image, else ``"T"``. An `index` built by another checkpoint
        (other weights, templates or fusion) is refused unless `allow_other_checkpoint`.
        """
        query = Mention(mention, sentence, image)
        found = self.link_batch(
            [query], candidates, index, top_k, mention_modality, entity_modality, allow_other_checkpoint
        )
        return found[0]

    def link_batch(
        self,
        mentions: Sequence[Mention],
        candidates: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]] | None = None,
        index: EntityIndex | None = None,
        top_k: int = 5,
        mention_modality: str | None = None,
        entity_modality: str | None = None,
        allow_other_checkpoint: bool = False,
    ) -> list[list[LinkedEntity]]:
        """`link` for many mentions at once, against one candidate list for all, one per mention, or an index.

        Each mention gets what `link` gives it alone: its own modality (``"TI"`` with a picture, else ``"T"``,
        unless `mention_modality` sets one for all), and its own list's entity modality. The entities of the
        candidate lists are embedded once per call, each distinct entity once, however many mentions share them.
        """
        if (candidates is None) == (index is None):
            raise ValueError("Pass either `candidates` (entities to rank) or `index` (an EntityIndex), not both.")
        if top_k < 1:
            raise ValueError(f"`top_k` must be at least 1, got {top_k}.")
        if index is not None:
            index.check_encoder(self.identity, allow_other_checkpoint)
            index.check_modality(entity_modality)
        queries = self.embed_queries(mentions, mention_modality)
        if index is not None:
            return index.search(queries, top_k)
        return self._rank_lists(queries, _per_mention(candidates, len(mentions)), top_k, entity_modality)

    def embed_queries(self, mentions: Sequence[Mention], mention_modality: str | None = None) -> torch.Tensor:
        """Each mention's embedding as `link_batch` searches with it: for `mention_modality`, or each for its own
        (``"TI"`` with a picture, else ``"T"``); the mentions of one modality are embedded together."""
        modalities = _mention_modalities(mentions, mention_modality)
        out = torch.empty(len(mentions), self.model.config.projection_dim, device=self.model.device)
        for modality in dict.fromkeys(modalities):
            rows = [i for i, each in enumerate(modalities) if each == modality]
            embedded, _ = self.embed_mentions([mentions[i] for i in rows], modality)
            out[torch.tensor(rows, device=out.device)] = embedded.to(out.dtype)
        return out

    def _rank_lists(
        self, queries: torch.Tensor, lists: list[Sequence[Mapping[str, Any]]], top_k: int, modality: str | None
    ) -> list[list[LinkedEntity]]:
        """Each mention's candidates ranked by score, the distinct entities of all `lists` embedded once."""
        distinct = _DistinctEntities()
        plans = {}
        for entities in lists:
            if id(entities) not in plans:  # a list shared by many mentions is read once
                plans[id(entities)] = distinct.add(list(entities), modality)
        embedded = {each: self.embed_entities(rows, each) for each, rows in distinct.rows.items()}
        return [
            _ranked(query, *plans[id(entities)], embedded, top_k)
            for query, entities in zip(queries, lists, strict=True)
        ]


class _DistinctEntities:
    """The distinct entities of candidate lists, per entity modality, and each list's entities as rows of them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Mapping[str, Any]]] = {}
        self.keys: dict[tuple[str, tuple], int] = {}

    def add(self, entities: list[Mapping[str, Any]], modality: str | None) -> tuple[list, str, list[int]]:
        """`(entities, their modality, their rows)`: the modality defaults to ``"TI"`` when every entity of the
        list has an image, else ``"T"``, as `link` chooses it."""
        modality = modality or ("TI" if entities and all(e.get("image") is not None for e in entities) else "T")
        rows = []
        for entity in entities:
            key = (modality, _entity_key(entity))
            if key not in self.keys:
                self.keys[key] = len(self.rows.setdefault(modality, []))
                self.rows[modality].append(entity)
            rows.append(self.keys[key])
        return entities, modality, rows


def _ranked(
    query: torch.Tensor,
    entities: list[Mapping[str, Any]],
    modality: str,
    rows: list[int],
    embedded: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    top_k: int,
) -> list[LinkedEntity]:
    """The `top_k` of `entities` for `query`, by the inner product of their embeddings (rows of `embedded`)."""
    if not entities:
        return []
    embeddings, usable = embedded[modality]
    picked = torch.tensor(rows, device=embeddings.device)
    scores = (embeddings[picked] @ query).masked_fill(~usable.to(embeddings.device)[picked], float("-inf")).cpu()
    order = torch.argsort(scores, descending=True, stable=True)[:top_k].tolist()
    return [
        LinkedEntity(
            rank=rank,
            qid=entities[i]["qid"],
            name=entities[i].get("name") or "",
            description=entities[i].get("description") or "",
            score=float(scores[i]),
            topic=entities[i].get("topic"),
            stored_image=entities[i].get("image"),
        )
        for rank, i in enumerate(order, start=1)
    ]


def _mention_modalities(mentions: Sequence[Mention], explicit: str | None) -> list[str]:
    """Each mention's modality (`explicit`, or ``"TI"`` with a picture, else ``"T"``), refusing a mention that
    lacks an input its modality needs."""
    if explicit is not None and explicit not in MODALITIES:
        raise ValueError(f"Unknown mention modality {explicit!r}; expected one of {', '.join(MODALITIES)}.")
    modalities = [explicit or ("TI" if m.image is not None else "T") for m in mentions]
    for i, (mention, modality) in enumerate(zip(mentions, modalities, strict=True)):
        which = "The mention" if len(mentions) == 1 else f"Mention {i}"
        if "I" in modality and mention.image is None:
            raise ValueError(f"{which} has no picture, which mention modality {modality!r} needs.")
        if "T" in modality and not (mention.mention or "").strip():
            raise ValueError(f"{which} is empty: give the words that name the entity, e.g. 'Paris'.")
    return modalities


def _entity_key(entity: Mapping[str, Any]) -> tuple:
    """What makes two candidates the same entity to embed: qid, name, description and the image's content."""
    return entity.get("qid"), entity.get("name"), entity.get("description"), _image_key(entity.get("image"))


def _image_key(image: Any) -> str | None:
    if isinstance(image, bytes | PIL.Image.Image | Mapping):
        return content_key(image)
    return None if image is None else str(image)


def _per_mention(candidates: Any, count: int) -> list[Sequence[Mapping[str, Any]]]:
    """One candidate list per mention: `candidates` shared by all, or already one list per mention."""
    if candidates and not isinstance(candidates[0], Mapping):
        if len(candidates) != count:
            raise ValueError(f"Got {len(candidates)} candidate lists for {count} mentions; give one per mention.")
        return list(candidates)
    return [candidates] * count


def _as_image(image: ImageLike) -> PIL.Image.Image | bytes:
    """What the fast image path takes: a PIL image, or encoded bytes (files are read, as `datasets` does)."""
    if isinstance(image, PIL.Image.Image | bytes):
        return image
    if isinstance(image, Mapping):
        return encoded_or_open(image)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    return path.read_bytes()


def as_pil(image: ImageLike) -> PIL.Image.Image:
    """`image` decoded as `datasets` decodes it (EXIF orientation applied)."""
    image = _as_image(image)
    return open_image(image) if isinstance(image, bytes) else image
