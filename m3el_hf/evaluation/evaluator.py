"""Evaluating CLIP_ND (or any CLIP) on M³EL: the nine tasks × topics, by candidate list and by whole KB.

Every unique text and every unique image (by content) is encoded once; the nine tasks and both protocols
reuse those embeddings, and a text+image (TI) row fuses the cached text and image embeddings with the
model's own fusion. Cost is one forward pass per unique mention, entity text and image, not per
candidate occurrence.

Protocols:

- ``"candidates"`` (M³EL's): each mention ranks its own candidate list; the label is the gold's position.
- ``"kb"`` (MIMIC-style): each mention ranks every entity of its topic's knowledge base (the
  ``{topic}-kb`` config); the gold is the KB row carrying the instance's ``gold_qid``.
- ``"candidates-leak-free"`` and ``"kb-leak-free"``: the same, for the tasks whose mention side uses the
  image, without the *leaked* instances (the mention's image is a copy or a near-duplicate of the gold's,
  `m3el_hf.data.leak`), which are counted in the records' ``leaked``. The column ``mention_image_leak``
  (written by ``m3el-hf prepare``) says which they are.

An instance is *excluded* from a task (and counted) when its mention or its gold entity lacks an image
the task needs. Any other entity lacking a needed image is scored ``-inf``: it ranks last and never
counts as a hit (see `m3el_hf.evaluation.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..benchmark import PROTOCOLS, is_leak_free, ranks_the_kb
from ..modeling.encoders import EncodedInputs, Encoders
from ..progress import progress as progress_bar
from ..tasks import TASK_NAMES, Task, get_task
from .embeddings import (
    INSTANCE_COLUMNS,
    KB_COLUMNS,
    LEAK_COLUMN,
    ImageStream,
    Instances,
    KnowledgeBase,
    TextRegistry,
    gather_instances,
    gather_kb,
)
from .entity_text import FULL, EntityTextVariant, degrade
from .metrics import Ties, metrics_from_counts, ranking_metrics, tie_counts
from .results import METRIC_KEYS, RECORD_KEYS, EvaluationResult, add_overall, topic_seen

__all__ = ["evaluate_model"]

logger = logging.getLogger(__name__)

_KS = (1, 3, 5)
# Score-matrix elements per whole-KB chunk (mentions × KB entities): ~64 MB of float32 at a time.
_KB_CHUNK_ELEMENTS = 1 << 24


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
    entity_text: str = FULL,
    trained_topics: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a CLIP_ND model on M³EL instances, every task × topic, with cached embeddings.

    Mention text is the config's `mention_template` over `mention` and `sentence`; entity text is name and
    description (`augment_description`) or the name only: both come from [`TextTemplates`], so evaluation
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
        entity_text (`str`, *optional*, defaults to `"full"`): The entity text variant
            (`m3el_hf.evaluation.entity_text`): ``full``, ``name``, ``truncate:N``, ``drop:P`` or ``shuffle``.
        trained_topics (`Sequence[str]`, *optional*):
            The topics the model was trained on: the records' `seen`; unknown (``None``) when not given.
        batch_size (`int`, *optional*, defaults to 64): Texts or images per encoder forward pass.
        progress (`bool`, *optional*, defaults to `True`): Show progress bars.

    Returns:
        [`EvaluationResult`]
    """
    task_list, protocols = _check_arguments(model, dataset, kb, tasks, protocols, ties, batch_size)
    variant = EntityTextVariant(entity_text)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            encoders = Encoders.for_model(model, tokenizer, image_processor, batch_size, progress)
            texts, images = TextRegistry(), ImageStream(encoders)
            whole_kb = any(ranks_the_kb(p) for p in protocols)
            rows = dataset.num_rows + (kb.num_rows if whole_kb else 0)
            leaks = any(is_leak_free(p) for p in protocols)
            templates = encoders.templates
            if entity_text != FULL:
                templates = degrade(templates, variant, dataset, kb if whole_kb else None)
            # One bar at a time: reading the rows (their images are encoded as they come), then the texts.
            with progress_bar(desc="Reading rows, encoding images", total=rows, unit="row", show=progress) as bar:
                instances = gather_instances(dataset, templates, task_list, texts, images, bar, leaks=leaks)
                entities = gather_kb(kb, templates, task_list, texts, images, bar) if whole_kb else None
                image_embeddings = images.embeddings()
            cache = EncodedInputs(model, encoders.texts(texts.items), image_embeddings)
            cells = {protocol: _score(protocol, instances, entities, cache, task_list, ties) for protocol in protocols}
    finally:
        model.train(was_training)
    header = {"model": model_name, "checkpoint": checkpoint, "split": split, "ties": ties, "entity_text": entity_text}
    records = [
        _record({**header, "seen": topic_seen(topic, trained_topics)}, protocol, topic, task, *cell)
        for protocol, by_cell in cells.items()
        for (task, topic), cell in by_cell.items()
    ]
    return EvaluationResult(add_overall(records))


def _score(
    protocol: str,
    instances: Instances,
    entities: KnowledgeBase | None,
    cache: EncodedInputs,
    tasks: list[Task],
    ties: Ties,
) -> dict[tuple[str, str], _Cell]:
    """The cells of one protocol; a leak-free one scores the tasks with an image on the mention side only."""
    drop = None
    if is_leak_free(protocol):
        tasks, drop = [t for t in tasks if t.mention_needs_image], instances.leaked
    if ranks_the_kb(protocol):
        return _score_kb(instances, entities, cache, tasks, ties, drop)
    return _score_candidates(instances, cache, tasks, ties, drop)


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
    if any(ranks_the_kb(p) for p in protocols) and kb is None:
        raise ValueError(
            "Protocol 'kb' ranks against each topic's knowledge base: pass `kb=` (the rows of the '{topic}-kb' "
            "configs, split 'kb'), or use protocols=('candidates',)."
        )
    if ties not in ("expected", "pessimistic"):
        raise ValueError(f"`ties` must be 'expected' or 'pessimistic', got {ties!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    missing = [c for c in INSTANCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {missing}; evaluate on a topic config (e.g. 'movies'), which has "
            "every column, not on a task config."
        )
    if any(is_leak_free(p) for p in protocols) and LEAK_COLUMN not in dataset.column_names:
        raise ValueError(
            f"The dataset lacks the column {LEAK_COLUMN!r}, which the leak-free protocols read; prepare the data "
            "again with `m3el-hf prepare`, or leave those protocols out."
        )
    if kb is not None and any(ranks_the_kb(p) for p in protocols) and not set(KB_COLUMNS) <= set(kb.column_names):
        raise ValueError(
            f"`kb` must hold the columns {list(KB_COLUMNS)} (a '{{topic}}-kb' config), got {kb.column_names}."
        )
    return task_list, protocols


# ---------------------------------------------------------------------------------------------
# Scoring and metrics
# ---------------------------------------------------------------------------------------------

_Cell = tuple[dict[str, float], int, int, int]  # metrics, evaluated, excluded, leaked


def _split_kept(usable: list[bool], drop: torch.Tensor | None, indices: list[int]) -> tuple[list[int], int, int]:
    """Of `indices`, the usable ones that `drop` does not leave out, how many were excluded and how many leaked."""
    dropped = drop.tolist() if drop is not None else None
    usable_here = [i for i in indices if usable[i]]
    kept = [i for i in usable_here if not (dropped and dropped[i])]
    return kept, len(indices) - len(usable_here), len(usable_here) - len(kept)


def _score_candidates(
    instances: Instances, cache: EncodedInputs, tasks: list[Task], ties: Ties, drop: torch.Tensor | None = None
) -> dict[tuple[str, str], _Cell]:
    owner = torch.repeat_interleave(torch.arange(len(instances.lengths)), torch.tensor(instances.lengths))
    gold_rows = torch.cumsum(torch.tensor([0, *instances.lengths[:-1]]), 0) + instances.labels
    mentions = {m: instances.mentions.embedded(cache, m) for m in {t.mention for t in tasks}}
    entities = {e: instances.candidates.embedded(cache, e) for e in {t.entity for t in tasks}}
    by_topic = _by_topic(instances.topics)
    cells: dict[tuple[str, str], _Cell] = {}
    for task in tasks:
        mention_embeds, mention_ok = mentions[task.mention]
        entity_embeds, entity_ok = entities[task.entity]
        device = entity_embeds.device
        scores = (mention_embeds[owner.to(device)] * entity_embeds).sum(-1)
        scores = scores.masked_fill(~entity_ok.to(device), float("-inf")).cpu()
        per_instance = torch.split(scores, instances.lengths)
        usable = (mention_ok & entity_ok[gold_rows]).tolist()
        for topic, indices in by_topic.items():
            kept, excluded, leaked = _split_kept(usable, drop, indices)
            metrics = ranking_metrics([per_instance[i] for i in kept], instances.labels[kept], ks=_KS, ties=ties)
            cells[task.name, topic] = (metrics, len(kept), excluded, leaked)
    return cells


def _score_kb(
    instances: Instances,
    kb: KnowledgeBase,
    cache: EncodedInputs,
    tasks: list[Task],
    ties: Ties,
    drop: torch.Tensor | None = None,
) -> dict[tuple[str, str], _Cell]:
    by_topic = _by_topic(instances.topics)
    gold = {topic: _kb_gold_rows(instances, kb, topic, indices) for topic, indices in by_topic.items()}
    mentions = {m: instances.mentions.embedded(cache, m) for m in {t.mention for t in tasks}}
    entities = {
        (topic, e): kb.entities[topic].embedded(cache, e) for topic in by_topic for e in {t.entity for t in tasks}
    }
    cells: dict[tuple[str, str], _Cell] = {}
    for task in tasks:
        mention_embeds, mention_ok = mentions[task.mention]
        for topic, indices in by_topic.items():
            entity_embeds, entity_ok = entities[topic, task.entity]
            index = torch.tensor(indices, dtype=torch.long)
            usable = mention_ok[index] & entity_ok[gold[topic]]
            keep = usable & ~drop[index] if drop is not None else usable
            metrics = _rank_against(mention_embeds[index[keep]], entity_embeds, entity_ok, gold[topic][keep], ties)
            evaluated, available = int(keep.sum()), int(usable.sum())
            cells[task.name, topic] = (metrics, evaluated, len(indices) - available, available - evaluated)
    return cells


def _kb_gold_rows(instances: Instances, kb: KnowledgeBase, topic: str, indices: list[int]) -> torch.Tensor:
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
    """Metrics of ranking the whole KB for each mention.

    The scores are taken a chunk of mentions at a time (`_KB_CHUNK_ELEMENTS`), so no mentions × entities matrix
    is held at once; each chunk leaves only its per-mention tie counts, which give exactly the metrics of the
    whole matrix (`metrics_from_counts`).
    """
    unusable = ~usable.to(entities.device)
    step = max(1, _KB_CHUNK_ELEMENTS // max(len(entities), 1))
    greater, tied = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for start in range(0, len(mentions), step):
        scores = (mentions[start : start + step] @ entities.T).masked_fill(unusable, float("-inf"))
        above, level = tie_counts(scores.cpu(), gold[start : start + step])
        greater.append(above)
        tied.append(level)
    return metrics_from_counts(np.concatenate(greater), np.concatenate(tied), ks=_KS, ties=ties)


def _by_topic(topics: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, topic in enumerate(topics):
        groups.setdefault(topic, []).append(i)
    return groups


def _record(
    header: dict[str, Any],
    protocol: str,
    topic: str,
    task: str,
    metrics: Mapping[str, float],
    evaluated: int,
    excluded: int,
    leaked: int,
) -> dict[str, Any]:
    values = {key: float(metrics[key]) if evaluated else float("nan") for key in METRIC_KEYS}
    record = {**header, "protocol": protocol, "topic": topic, "task": task, **values}
    record.update(evaluated=evaluated, excluded=excluded, leaked=leaked)
    return {key: record[key] for key in RECORD_KEYS}


# ---------------------------------------------------------------------------------------------
# Reporting: JSON, tables, plot
# ---------------------------------------------------------------------------------------------
