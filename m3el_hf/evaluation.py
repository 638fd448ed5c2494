"""Evaluating CLIP_ND (or any CLIP) on M³EL: the nine tasks × topics, by candidate list and by whole KB.

Every unique text and every unique image (by content) is encoded once; the nine tasks and both protocols
reuse those embeddings, and a text+image (TI) row fuses the cached text and image embeddings with the
model's own fusion. Cost is one forward pass per unique mention, entity text and image, not per
candidate occurrence.

Protocols:

- ``"candidates"`` (M³EL's): each mention ranks its own candidate list; the label is the gold's position.
- ``"kb"`` (MIMIC-style): each mention ranks every entity of its topic's knowledge base (the
  ``{topic}-kb`` config); the gold is the KB row carrying the instance's ``gold_qid``.

An instance is *excluded* from a task (and counted) when its mention or its gold entity lacks an image
the task needs. Any other entity lacking a needed image is scored ``-inf``: it ranks last and never
counts as a hit (see `m3el_hf.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .atomic import atomic_write
from .collator import M3ELCollator
from .metrics import Ties, ranking_metrics
from .processing import FastImagePreprocessor, tokenize
from .tasks import TASK_NAMES, Modality, Task, get_task

__all__ = [
    "ALL_TOPICS",
    "METRIC_KEYS",
    "PROTOCOLS",
    "RECORD_KEYS",
    "EvaluationResult",
    "Protocol",
    "evaluate_model",
    "format_table",
    "plot_accuracy",
    "read_results",
    "write_results",
]

logger = logging.getLogger(__name__)

Protocol = Literal["candidates", "kb"]
PROTOCOLS: tuple[str, ...] = ("candidates", "kb")
ALL_TOPICS = "all"
"""The `topic` of the records pooling every evaluated topic (a mention-weighted mean)."""
METRIC_KEYS: tuple[str, ...] = ("accuracy", "hits@1", "hits@3", "hits@5", "mrr")
RECORD_KEYS: tuple[str, ...] = (
    "model",
    "checkpoint",
    "protocol",
    "topic",
    "task",
    "split",
    *METRIC_KEYS,
    "evaluated",
    "excluded",
    "ties",
)
"""The keys of every record, in order; metrics are ``NaN`` (``null`` in JSON) when nothing was evaluated."""

_KS = (1, 3, 5)
# Score-matrix elements per whole-KB chunk (mentions × KB entities): ~64 MB of float32 at a time.
_KB_CHUNK_ELEMENTS = 1 << 24
# Rows read from Arrow at a time while gathering: bounds the image bytes held in Python.
_READ_BATCH = 512
_INSTANCE_COLUMNS = ("topic", "mention", "sentence", "mention_image", "candidates", "candidate_images", "label")
_KB_COLUMNS = ("topic", "qid", "name", "description", "image")


@dataclass
class EvaluationResult:
    """The records of one model's evaluation: one per (protocol, topic, task), pooled topic ``"all"`` included.

    >>> result = evaluate_model(model, tokenizer, image_processor, test_set)  # doctest: +SKIP
    >>> result.mean_accuracy()  # doctest: +SKIP
    0.83
    """

    records: list[dict[str, Any]] = field(default_factory=list)

    def mean_accuracy(self, protocol: str = "candidates", topic: str = ALL_TOPICS) -> float:
        """Macro mean accuracy over the tasks evaluated for `protocol` and `topic` (``NaN`` if none was)."""
        return _mean_accuracy(self.records, protocol, topic)

    def table(self) -> str:
        """Accuracy (%) per task (rows) and topic (columns), one block per protocol, for the terminal."""
        blocks = []
        for protocol in _unique(r["protocol"] for r in self.records):
            records = [r for r in self.records if r["protocol"] == protocol]
            topics = _unique(r["topic"] for r in records)
            cells = {(r["task"], r["topic"]): r["accuracy"] for r in records}
            tasks = _unique(r["task"] for r in records)
            rows = [[task, *(_percent(cells.get((task, topic))) for topic in topics)] for task in tasks]
            rows.append(["mean", *(_percent(_mean_accuracy(records, protocol, topic)) for topic in topics)])
            title = f"{records[0]['model']}: accuracy (%), protocol {protocol!r}, split {records[0]['split']!r}"
            blocks.append(_render(title, ["task", *topics], rows))
        return "\n\n".join(blocks)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    image_processor: Any,
    dataset: Any,
    *,
    kb: Any | None = None,
    tasks: Sequence[str] = TASK_NAMES,
    protocols: Sequence[str] = ("candidates",),
    model_name: str = "model",
    checkpoint: str = "",
    split: str = "test",
    ties: Ties = "expected",
    batch_size: int = 64,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a CLIP_ND model on M³EL instances, every task × topic, with cached embeddings.

    Mention text is the config's `mention_template` over `mention` and `sentence`; entity text is name and
    description (`augment_description`) or the name only: both come from [`M3ELCollator`], so evaluation
    sees exactly the training texts. The model is put in eval mode and restored to its mode afterwards.

    Args:
        model (`CLIPNDModel`):
            The model; its `encode_text` / `encode_image` give the embeddings and its device is used.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        image_processor (`BaseImageProcessor`): Its image processor (PIL backend).
        dataset (`datasets.Dataset`):
            Instance rows of one split, any mix of topics (grouped by the `topic` column).
        kb (`datasets.Dataset`, *optional*):
            Knowledge-base rows (the `{topic}-kb` configs) of the evaluated topics; needed for protocol ``"kb"``.
        tasks (`Sequence[str]`, *optional*, defaults to all nine): Tasks to evaluate.
        protocols (`Sequence[str]`, *optional*, defaults to `("candidates",)`): Any of ``"candidates"``, ``"kb"``.
        model_name (`str`, *optional*, defaults to `"model"`): The `model` label of the records.
        checkpoint (`str`, *optional*, defaults to `""`): The `checkpoint` of the records.
        split (`str`, *optional*, defaults to `"test"`): The `split` of the records.
        ties (`str`, *optional*, defaults to `"expected"`): Tie handling of [`ranking_metrics`].
        batch_size (`int`, *optional*, defaults to 64): Texts or images per encoder forward pass.
        progress (`bool`, *optional*, defaults to `True`): Show progress bars.

    Returns:
        [`EvaluationResult`]
    """
    task_list, protocols = _check_arguments(model, dataset, kb, tasks, protocols, ties, batch_size)
    collator = M3ELCollator.from_pretrained(model, tokenizer=tokenizer, image_processor=image_processor)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            encoders = _Encoders(model, tokenizer, image_processor, collator.max_length, batch_size, progress)
            texts, images = _Registry(), _ImageStream(encoders)
            instances = _gather_instances(dataset, collator, task_list, texts, images)
            entities = _gather_kb(kb, collator, task_list, texts, images) if "kb" in protocols else None
            cache = _EmbeddingCache(model, encoders.texts(texts.items), images.embeddings())
            cells = {}
            if "candidates" in protocols:
                cells["candidates"] = _score_candidates(instances, cache, task_list, ties)
            if entities is not None:
                cells["kb"] = _score_kb(instances, entities, cache, task_list, ties)
    finally:
        model.train(was_training)
    header = {"model": model_name, "checkpoint": checkpoint, "split": split, "ties": ties}
    records = [
        _record(header, protocol, topic, task, metrics, evaluated, excluded)
        for protocol, by_cell in cells.items()
        for (task, topic), (metrics, evaluated, excluded) in by_cell.items()
    ]
    return EvaluationResult(records)


def _check_arguments(
    model: Any, dataset: Any, kb: Any, tasks: Sequence[str], protocols: Sequence[str], ties: str, batch_size: int
) -> tuple[list[Task], tuple[str, ...]]:
    for method in ("encode_text", "encode_image", "encode"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"evaluate_model needs a CLIPNDModel (it has no `{method}`), got {type(model).__name__}; load "
                "plain CLIP checkpoints with `CLIPNDModel.from_pretrained(path)`."
            )
    task_list = [get_task(task) for task in ([tasks] if isinstance(tasks, str) else tasks)]
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    if not task_list or not protocols:
        raise ValueError(f"Nothing to evaluate: tasks={list(tasks)!r}, protocols={list(protocols)!r}.")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"Unknown protocol(s) {unknown}; expected some of {PROTOCOLS}.")
    if "kb" in protocols and kb is None:
        raise ValueError(
            "Protocol 'kb' ranks against each topic's knowledge base: pass `kb=` (the rows of the '{topic}-kb' "
            "configs, split 'kb'), or use protocols=('candidates',)."
        )
    if ties not in ("expected", "pessimistic"):
        raise ValueError(f"`ties` must be 'expected' or 'pessimistic', got {ties!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    missing = [c for c in _INSTANCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {missing}; evaluate on a topic config (e.g. 'movies'), which has "
            "every column, not on a task config."
        )
    if kb is not None and "kb" in protocols and not set(_KB_COLUMNS) <= set(kb.column_names):
        raise ValueError(
            f"`kb` must hold the columns {list(_KB_COLUMNS)} (a '{{topic}}-kb' config), got {kb.column_names}."
        )
    return task_list, protocols


# ---------------------------------------------------------------------------------------------
# Gathering: what to encode, and which cached embedding each mention and candidate uses
# ---------------------------------------------------------------------------------------------


class _Registry:
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
class _Items:
    """Rows to embed (mentions, candidate occurrences or KB entities): their text and image rows, -1 if none."""

    text: torch.Tensor
    image: torch.Tensor


@dataclass
class _Instances:
    topics: list[str]
    mentions: _Items
    candidates: _Items  # every candidate occurrence, instance by instance
    lengths: list[int]  # candidates per instance
    labels: torch.Tensor
    gold_qids: list[str]


@dataclass
class _KnowledgeBase:
    entities: dict[str, _Items]  # per topic
    qid_rows: dict[str, dict[str, int]]  # per topic: qid -> row


def _batches(dataset: Any, names: Sequence[str]) -> Iterator[dict[str, list[Any]]]:
    """The columns, a block of rows at a time, as Python lists; images stay undecoded ``{"bytes", "path"}``."""
    for table in dataset.select_columns(list(names)).with_format("arrow").iter(batch_size=_READ_BATCH):
        yield {name: table.column(name).to_pylist() for name in names}


def _gather_instances(
    dataset: Any, collator: M3ELCollator, tasks: list[Task], texts: _Registry, images: _ImageStream
) -> _Instances:
    need = _needs(tasks)
    topics, mention_text, mention_image, cand_text, cand_image, lengths, labels, gold_qids = ([] for _ in range(8))
    for block in _batches(dataset, _INSTANCE_COLUMNS):
        for i, candidates in enumerate(block["candidates"]):
            if need["mention_text"]:
                mention_text.append(texts.add(collator.mention_text(block["mention"][i], block["sentence"][i])))
            mention_image.append(images.add(block["mention_image"][i]) if need["mention_image"] else -1)
            candidate_images = block["candidate_images"][i] or [None] * len(candidates)
            if len(candidate_images) != len(candidates):
                raise ValueError(
                    f"Instance {len(lengths)}: candidate_images has {len(candidate_images)} items for "
                    f"{len(candidates)} candidates; it must be aligned with `candidates` (null where none)."
                )
            for candidate, image in zip(candidates, candidate_images, strict=True):
                if need["entity_text"]:
                    cand_text.append(texts.add(collator.entity_text(candidate)))
                cand_image.append(images.add(image) if need["entity_image"] else -1)
            lengths.append(len(candidates))
            gold_qids.append(candidates[block["label"][i]]["qid"])
        topics += block["topic"]
        labels += block["label"]
    return _Instances(
        topics=topics,
        mentions=_items(mention_text, mention_image),
        candidates=_items(cand_text, cand_image),
        lengths=lengths,
        labels=torch.tensor(labels, dtype=torch.long),
        gold_qids=gold_qids,
    )


def _gather_kb(
    kb: Any, collator: M3ELCollator, tasks: list[Task], texts: _Registry, images: _ImageStream
) -> _KnowledgeBase:
    need = _needs(tasks)
    text_rows: dict[str, list[int]] = {}
    image_rows: dict[str, list[int]] = {}
    qid_rows: dict[str, dict[str, int]] = {}
    for block in _batches(kb, _KB_COLUMNS):
        for i, topic in enumerate(block["topic"]):
            qids, qid = qid_rows.setdefault(topic, {}), block["qid"][i]
            if qid in qids:
                raise ValueError(f"The {topic!r} KB lists entity {qid!r} twice; pass each '{{topic}}-kb' config once.")
            qids[qid] = len(qids)
            if need["entity_text"]:
                entity = {"name": block["name"][i], "description": block["description"][i]}
                text_rows.setdefault(topic, []).append(texts.add(collator.entity_text(entity)))
            image_rows.setdefault(topic, []).append(images.add(block["image"][i]) if need["entity_image"] else -1)
    entities = {topic: _items(text_rows.get(topic, []), image_rows[topic]) for topic in qid_rows}
    return _KnowledgeBase(entities, qid_rows)


def _needs(tasks: list[Task]) -> dict[str, bool]:
    return {
        "mention_text": any(t.mention_needs_text for t in tasks),
        "mention_image": any(t.mention_needs_image for t in tasks),
        "entity_text": any(t.entity_needs_text for t in tasks),
        "entity_image": any(t.entity_needs_image for t in tasks),
    }


def _items(text_rows: list[int], image_rows: list[int]) -> _Items:
    image = torch.tensor(image_rows, dtype=torch.long)
    text = torch.tensor(text_rows, dtype=torch.long) if text_rows else torch.full_like(image, -1)
    return _Items(text, image)


# ---------------------------------------------------------------------------------------------
# Encoding: each unique text and image once, in batches
# ---------------------------------------------------------------------------------------------


@dataclass
class _Encoders:
    model: Any
    tokenizer: Any
    image_processor: Any
    max_length: int
    batch_size: int
    progress: bool

    def texts(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts`, batched by length so that little padding is encoded."""
        if not texts:
            return torch.empty(0, self.model.config.projection_dim, device=self.model.device)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=f"Encoding {len(texts)} texts", unit="batch", disable=not self.progress):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            tokens = tokenize(self.tokenizer, batch, self.max_length)
            device = self.model.device
            chunks.append(self.model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)))
        out = chunks[0].new_empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order, device=out.device)] = torch.cat(chunks)
        return out

    def __post_init__(self) -> None:
        from datasets import Image

        self.decoder = Image()
        # The collator's preprocessing (same pixel values as the image processor, faster), RGB conversion included.
        self.preprocess = FastImagePreprocessor(self.image_processor)

    def images(self, values: list[Mapping[str, Any]]) -> torch.Tensor:
        """Embeddings of undecoded ``{"bytes", "path"}`` images."""
        pixels = self.preprocess([self.decoder.decode_example(dict(value)) for value in values])
        return self.model.encode_image(pixels.to(self.model.device))


class _ImageStream:
    """Unique images by content, encoded a batch at a time as they are met, so that the bytes of at most one
    batch are held (a full M³EL split holds gigabytes of images)."""

    def __init__(self, encoders: _Encoders) -> None:
        self.encoders = encoders
        self.rows: dict[Hashable, int] = {}
        self.pending: list[Mapping[str, Any]] = []
        self.chunks: list[torch.Tensor] = []
        self.bar = tqdm(desc="Encoding images", unit="image", disable=not encoders.progress)

    def add(self, value: Mapping[str, Any] | None) -> int:
        """The row of the image `value` (encoded now or later), or -1 if there is none."""
        if value is None or not (value.get("bytes") or value.get("path")):
            return -1
        # Keyed by content: the same picture (e.g. a mention image that is also its gold's) is encoded once.
        key = hashlib.blake2b(value["bytes"], digest_size=16).digest() if value.get("bytes") else value["path"]
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
        self.bar.close()
        if not self.chunks:
            return torch.empty(0, self.encoders.model.config.projection_dim, device=self.encoders.model.device)
        return torch.cat(self.chunks)

    def _flush(self) -> None:
        if self.pending:
            self.chunks.append(self.encoders.images(self.pending))
            self.bar.update(len(self.pending))
            self.pending = []


class _EmbeddingCache:
    """The unique text and image embeddings, and per-modality embeddings of rows built from them."""

    def __init__(self, model: Any, text: torch.Tensor, image: torch.Tensor) -> None:
        self.model, self.text, self.image = model, text, image

    def embed(self, items: _Items, modality: Modality) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeddings, usable)` of `items` for `modality`; rows lacking a needed input are unusable (zeros)."""
        has_text, has_image = items.text >= 0, items.image >= 0
        if modality == "T":
            return self.text[items.text.clamp(min=0)], has_text
        if modality == "I":
            return self.image[items.image.clamp(min=0)], has_image
        usable = has_text & has_image
        pairs, inverse = torch.unique(torch.stack([items.text, items.image], 1)[usable], dim=0, return_inverse=True)
        fused = _fuse(self.model, self.text[pairs[:, 0]], self.image[pairs[:, 1]])
        out = fused.new_zeros(len(usable), fused.shape[1])
        out[usable.to(out.device)] = fused[inverse.to(out.device)]
        return out, usable


def _fuse(model: Any, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Fuse cached text and image embeddings row by row, with the model's own fusion (`CLIPNDModel.combine`)."""
    return model.combine(texts=text, images=image)


# ---------------------------------------------------------------------------------------------
# Scoring and metrics
# ---------------------------------------------------------------------------------------------

_Cell = tuple[dict[str, float], int, int]  # metrics, evaluated, excluded


def _score_candidates(
    instances: _Instances, cache: _EmbeddingCache, tasks: list[Task], ties: Ties
) -> dict[tuple[str, str], _Cell]:
    owner = torch.repeat_interleave(torch.arange(len(instances.lengths)), torch.tensor(instances.lengths))
    gold_rows = torch.cumsum(torch.tensor([0, *instances.lengths[:-1]]), 0) + instances.labels
    mentions = {m: cache.embed(instances.mentions, m) for m in {t.mention for t in tasks}}
    entities = {e: cache.embed(instances.candidates, e) for e in {t.entity for t in tasks}}
    by_topic = _by_topic(instances.topics)
    cells: dict[tuple[str, str], _Cell] = {}
    for task in tasks:
        mention_embeds, mention_ok = mentions[task.mention]
        entity_embeds, entity_ok = entities[task.entity]
        device = entity_embeds.device
        scores = (mention_embeds[owner.to(device)] * entity_embeds).sum(-1)
        scores = scores.masked_fill(~entity_ok.to(device), float("-inf")).cpu()
        per_instance = torch.split(scores, instances.lengths)
        keep = (mention_ok & entity_ok[gold_rows]).tolist()
        for topic, indices in by_topic.items():
            kept = [i for i in indices if keep[i]]
            metrics = ranking_metrics([per_instance[i] for i in kept], instances.labels[kept], ks=_KS, ties=ties)
            cells[task.name, topic] = (metrics, len(kept), len(indices) - len(kept))
        cells[task.name, ALL_TOPICS] = _pool([cells[task.name, topic] for topic in by_topic])
    return cells


def _score_kb(
    instances: _Instances, kb: _KnowledgeBase, cache: _EmbeddingCache, tasks: list[Task], ties: Ties
) -> dict[tuple[str, str], _Cell]:
    by_topic = _by_topic(instances.topics)
    gold = {topic: _kb_gold_rows(instances, kb, topic, indices) for topic, indices in by_topic.items()}
    mentions = {m: cache.embed(instances.mentions, m) for m in {t.mention for t in tasks}}
    entities = {(topic, e): cache.embed(kb.entities[topic], e) for topic in by_topic for e in {t.entity for t in tasks}}
    cells: dict[tuple[str, str], _Cell] = {}
    for task in tasks:
        mention_embeds, mention_ok = mentions[task.mention]
        for topic, indices in by_topic.items():
            entity_embeds, entity_ok = entities[topic, task.entity]
            index = torch.tensor(indices, dtype=torch.long)
            keep = mention_ok[index] & entity_ok[gold[topic]]
            metrics = _rank_against(mention_embeds[index[keep]], entity_embeds, entity_ok, gold[topic][keep], ties)
            evaluated = int(keep.sum())
            cells[task.name, topic] = (metrics, evaluated, len(indices) - evaluated)
        cells[task.name, ALL_TOPICS] = _pool([cells[task.name, topic] for topic in by_topic])
    return cells


def _kb_gold_rows(instances: _Instances, kb: _KnowledgeBase, topic: str, indices: list[int]) -> torch.Tensor:
    if topic not in kb.qid_rows:
        raise ValueError(f"The KB has no entity of topic {topic!r}; pass the rows of the '{topic}-kb' config in `kb`.")
    rows = []
    for i in indices:
        row = kb.qid_rows[topic].get(instances.gold_qids[i])
        if row is None:
            raise ValueError(
                f"Gold entity {instances.gold_qids[i]!r} of a {topic!r} instance is not in the {topic!r} KB; "
                "the KB must come from the same prepared release as the instances."
            )
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def _rank_against(
    mentions: torch.Tensor, entities: torch.Tensor, usable: torch.Tensor, gold: torch.Tensor, ties: Ties
) -> dict[str, float]:
    """Metrics of ranking the whole KB for each mention, in chunks of mentions to bound memory."""
    unusable = ~usable.to(entities.device)
    step = max(1, _KB_CHUNK_ELEMENTS // max(len(entities), 1))
    parts = []
    for start in range(0, len(mentions), step):
        scores = (mentions[start : start + step] @ entities.T).masked_fill(unusable, float("-inf"))
        parts.append((ranking_metrics(scores.cpu(), gold[start : start + step], ks=_KS, ties=ties), 0, 0))
    return _pool(parts)[0] if parts else ranking_metrics([], [], ks=_KS, ties=ties)


def _pool(cells: Iterable[_Cell]) -> _Cell:
    """Combine cells by a count-weighted mean of their metrics (metrics are means over mentions)."""
    cells = list(cells)
    count = sum(int(metrics["count"]) for metrics, _, _ in cells)
    pooled: dict[str, float] = {"count": count}
    for key in METRIC_KEYS:
        total = math.fsum(m[key] * m["count"] for m, _, _ in cells if m["count"])
        pooled[key] = total / count if count else float("nan")
    return pooled, sum(c[1] for c in cells), sum(c[2] for c in cells)


def _by_topic(topics: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, topic in enumerate(topics):
        groups.setdefault(topic, []).append(i)
    return groups


def _record(
    header: dict[str, str],
    protocol: str,
    topic: str,
    task: str,
    metrics: Mapping[str, float],
    evaluated: int,
    excluded: int,
) -> dict[str, Any]:
    values = {key: float(metrics[key]) if evaluated else float("nan") for key in METRIC_KEYS}
    record = {**header, "protocol": protocol, "topic": topic, "task": task, **values}
    record.update(evaluated=evaluated, excluded=excluded)
    return {key: record[key] for key in RECORD_KEYS}


# ---------------------------------------------------------------------------------------------
# Reporting: JSON, tables, plot
# ---------------------------------------------------------------------------------------------


def write_results(
    path: str | os.PathLike[str],
    results: Sequence[EvaluationResult],
    dataset: str,
    synthetic: bool | None = None,
) -> Path:
    """Write every model's records to one JSON file, atomically; empty cells are ``null``.

    The file is ``{"dataset": ..., "synthetic": ..., "ties": ..., "records": [...]}``, the input of model
    cards and plots.

    Args:
        path (`str` or `os.PathLike`): The JSON file to write; its folder is created.
        results (`Sequence[EvaluationResult]`): One per model, all with the same tie handling.
        dataset (`str`): The evaluated data: a prepared folder or Hub id.
        synthetic (`bool`, *optional*): Whether that data is a synthetic release; None when unknown.

    Returns:
        `Path`: `path`.
    """
    records = [record for result in results for record in result.records]
    ties = _unique(record["ties"] for record in records)
    if len(ties) > 1:
        raise ValueError(f"The results mix tie handlings {ties}; evaluate every model with the same `ties`.")
    nulled = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]
    payload = {"dataset": dataset, "synthetic": synthetic, "ties": ties[0] if ties else None, "records": nulled}
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a file written by [`write_results`]; ``null`` metrics come back as ``NaN``."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["records"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not an evaluation results file written by write_results ({error!r}).") from None
    for i, record in enumerate(records):
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}; rewrite the file with `m3el-hf evaluate`.")
        record.update({key: float("nan") for key in METRIC_KEYS if record[key] is None})
    return records


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy (%) of each model (columns) per task (rows), pooled over topics, one block per protocol."""
    blocks = []
    for protocol in _unique(r["protocol"] for r in records):
        pooled = [r for r in records if r["protocol"] == protocol and r["topic"] == ALL_TOPICS]
        models = _unique(r["model"] for r in pooled)
        cells = {(r["task"], r["model"]): r["accuracy"] for r in pooled}
        tasks = _unique(r["task"] for r in pooled)
        rows = [[task, *(_percent(cells.get((task, model))) for model in models)] for task in tasks]
        means = [_mean_accuracy([r for r in pooled if r["model"] == m], protocol, ALL_TOPICS) for m in models]
        rows.append(["mean", *map(_percent, means)])
        blocks.append(_render(f"Accuracy (%), protocol {protocol!r}, all topics", ["task", *models], rows))
    return "\n\n".join(blocks)


def plot_accuracy(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], protocol: str = "candidates"
) -> Path:
    """Draw accuracy per task, one bar per topic, one panel per model, to a PNG (written atomically).

    Returns:
        `Path`: `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = [r for r in records if r["protocol"] == protocol]
    if not chosen:
        raise ValueError(
            f"No record has protocol {protocol!r}; the records have {_unique(r['protocol'] for r in records)}."
        )
    models, tasks, topics = (_unique(r[key] for r in chosen) for key in ("model", "task", "topic"))
    figure = Figure(figsize=(max(6.0, 0.9 * len(tasks) * max(1, len(topics) / 3)), 3.2 * len(models)))
    FigureCanvasAgg(figure)
    width = 0.8 / len(topics)
    for panel, model in enumerate(models):
        axes = figure.add_subplot(len(models), 1, panel + 1)
        cells = {(r["task"], r["topic"]): r["accuracy"] for r in chosen if r["model"] == model}
        for j, topic in enumerate(topics):
            heights = [100 * cells.get((task, topic), float("nan")) for task in tasks]
            axes.bar([i + (j - (len(topics) - 1) / 2) * width for i in range(len(tasks))], heights, width, label=topic)
        axes.set(title=f"{model} ({protocol})", ylabel="accuracy (%)", ylim=(0, 100))
        axes.set_xticks(range(len(tasks)), tasks)
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), title="topic")
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def _mean_accuracy(records: Iterable[Mapping[str, Any]], protocol: str, topic: str) -> float:
    values = [r["accuracy"] for r in records if r["protocol"] == protocol and r["topic"] == topic]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(values) / len(values) if values else float("nan")


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _render(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # The first column (task names) reads left-aligned, the numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
