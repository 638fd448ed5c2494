"""What the evaluator encodes: every unique text and image (by content) once, images a batch at a time as met."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..benchmark import is_leak
from ..images import content_key, encoded_or_open
from ..modeling.encoders import EncodedInputs, Encoders
from ..modeling.templates import TextTemplates
from ..tasks import Modality, Task
from .entity_text import DegradedTemplates

__all__ = [
    "INSTANCE_COLUMNS",
    "KB_COLUMNS",
    "LEAK_COLUMN",
    "ImageStream",
    "Instances",
    "Items",
    "KnowledgeBase",
    "TextRegistry",
    "gather_instances",
    "gather_kb",
]


# Rows read from Arrow at a time while gathering: bounds the image bytes held in Python.
_READ_BATCH = 512
INSTANCE_COLUMNS = ("topic", "mention", "sentence", "mention_image", "candidates", "candidate_images", "label")
KB_COLUMNS = ("topic", "qid", "name", "description", "image")
LEAK_COLUMN = "mention_image_leak"
"""Read by the leak-free protocols: whether an instance's mention image copies the gold's (`m3el_hf.data.leak`)."""


class TextRegistry:
    """Unique texts, each with a stable row index in the order first seen."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.items: list[str] = []

    def add(self, text: str) -> int:
        row = self.rows.get(text)
        if row is None:
            row = self.rows[text] = len(self.items)
            self.items.append(text)
        return row


@dataclass
class Items:
    """Rows to embed (mentions, candidate occurrences or KB entities): their text and image rows, -1 if none."""

    text: torch.Tensor
    image: torch.Tensor

    def embedded(self, inputs: EncodedInputs, modality: Modality) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of these rows for `modality`, from the encoded `inputs` (`EncodedInputs.rows`)."""
        return inputs.rows(self.text, self.image, modality)


@dataclass
class Instances:
    topics: list[str]
    mentions: Items
    candidates: Items  # every candidate occurrence, instance by instance
    lengths: list[int]  # candidates per instance
    labels: torch.Tensor
    gold_qids: list[str]
    leaked: torch.Tensor  # bool, per instance: its mention image is a copy or near-duplicate of the gold's


@dataclass
class KnowledgeBase:
    entities: dict[str, Items]  # per topic
    qid_rows: dict[str, dict[str, int]]  # per topic: qid -> row


def _batches(dataset: Any, names: Sequence[str], bar: Any) -> Iterator[dict[str, list[Any]]]:
    """The columns, a block of rows at a time, as Python lists; images stay undecoded ``{"bytes", "path"}``.

    `bar` (a progress bar, or None) advances by the rows of each block once it is done.
    """
    for table in dataset.select_columns(list(names)).with_format("arrow").iter(batch_size=_READ_BATCH):
        yield {name: table.column(name).to_pylist() for name in names}
        if bar is not None:
            bar.update(table.num_rows)


def gather_instances(
    dataset: Any,
    templates: TextTemplates | DegradedTemplates,
    tasks: list[Task],
    texts: TextRegistry,
    images: ImageStream,
    bar: Any,
    leaks: bool = False,
) -> Instances:
    """What to encode for each instance and candidate; with `leaks`, which instances are leaked (`LEAK_COLUMN`)."""
    need = _needs(tasks)
    topics, mention_text, mention_image, cand_text, cand_image, lengths, labels, gold_qids = ([] for _ in range(8))
    leaked: list[bool] = []
    columns = (*INSTANCE_COLUMNS, LEAK_COLUMN) if leaks else INSTANCE_COLUMNS
    for block in _batches(dataset, columns, bar):
        if leaks:
            leaked += [is_leak(kind) for kind in block[LEAK_COLUMN]]
        for i, candidates in enumerate(block["candidates"]):
            if need["mention_text"]:
                mention_text.append(texts.add(templates.mention_text(block["mention"][i], block["sentence"][i])))
            mention_image.append(images.add(block["mention_image"][i]) if need["mention_image"] else -1)
            candidate_images = block["candidate_images"][i] or [None] * len(candidates)
            if len(candidate_images) != len(candidates):
                raise ValueError(
                    f"Instance {len(lengths)}: candidate_images has {len(candidate_images)} items for "
                    f"{len(candidates)} candidates; it must be aligned with `candidates` (null where none)."
                )
            for candidate, image in zip(candidates, candidate_images, strict=True):
                if need["entity_text"]:
                    cand_text.append(texts.add(templates.entity_text(candidate)))
                cand_image.append(images.add(image) if need["entity_image"] else -1)
            lengths.append(len(candidates))
            gold_qids.append(candidates[block["label"][i]]["qid"])
        topics += block["topic"]
        labels += block["label"]
    return Instances(
        topics=topics,
        mentions=_items(mention_text, mention_image),
        candidates=_items(cand_text, cand_image),
        lengths=lengths,
        labels=torch.tensor(labels, dtype=torch.long),
        gold_qids=gold_qids,
        leaked=torch.tensor(leaked if leaks else [False] * len(labels), dtype=torch.bool),
    )


def gather_kb(
    kb: Any,
    templates: TextTemplates | DegradedTemplates,
    tasks: list[Task],
    texts: TextRegistry,
    images: ImageStream,
    bar: Any,
) -> KnowledgeBase:
    need = _needs(tasks)
    text_rows: dict[str, list[int]] = {}
    image_rows: dict[str, list[int]] = {}
    qid_rows: dict[str, dict[str, int]] = {}
    for block in _batches(kb, KB_COLUMNS, bar):
        for i, topic in enumerate(block["topic"]):
            qids, qid = qid_rows.setdefault(topic, {}), block["qid"][i]
            if qid in qids:
                raise ValueError(f"The {topic!r} KB lists entity {qid!r} twice; pass each '{{topic}}-kb' config once.")
            qids[qid] = len(qids)
            if need["entity_text"]:
                entity = {"qid": qid, "name": block["name"][i], "description": block["description"][i]}
                text_rows.setdefault(topic, []).append(texts.add(templates.entity_text(entity)))
            image_rows.setdefault(topic, []).append(images.add(block["image"][i]) if need["entity_image"] else -1)
    entities = {topic: _items(text_rows.get(topic, []), image_rows[topic]) for topic in qid_rows}
    return KnowledgeBase(entities, qid_rows)


def _needs(tasks: list[Task]) -> dict[str, bool]:
    return {
        "mention_text": any(t.mention_needs_text for t in tasks),
        "mention_image": any(t.mention_needs_image for t in tasks),
        "entity_text": any(t.entity_needs_text for t in tasks),
        "entity_image": any(t.entity_needs_image for t in tasks),
    }


def _items(text_rows: list[int], image_rows: list[int]) -> Items:
    image = torch.tensor(image_rows, dtype=torch.long)
    text = torch.tensor(text_rows, dtype=torch.long) if text_rows else torch.full_like(image, -1)
    return Items(text, image)


class ImageStream:
    """Unique images by content, encoded a batch at a time as they are met, so that the bytes of at most one
    batch are held (a full M³EL split holds gigabytes of images)."""

    def __init__(self, encoders: Encoders) -> None:
        self.encoders = encoders
        self.rows: dict[Hashable, int] = {}
        self.pending: list[Mapping[str, Any]] = []
        self.chunks: list[torch.Tensor] = []

    def add(self, value: Mapping[str, Any] | None) -> int:
        """The row of the image `value` (encoded now or later), or -1 if there is none."""
        if value is None or not (value.get("bytes") or value.get("path")):
            return -1
        # Keyed by content: the same picture (e.g. a mention image that is also its gold's) is encoded once.
        key = content_key(value)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.rows)
            self.pending.append(value)
            if len(self.pending) == self.encoders.batch_size:
                self._flush()
        return row

    def embeddings(self) -> torch.Tensor:
        """All the images' embeddings, by row."""
        self._flush()
        if not self.chunks:
            return self.encoders.images([])
        return torch.cat(self.chunks)

    def _flush(self) -> None:
        if self.pending:
            images = [encoded_or_open(value) for value in self.pending]
            self.chunks.append(self.encoders.images(images))
            self.pending = []
