"""The retrieval task M³EL's MTEB tasks share: loading the prepared data, exclusions, and the tie-honest scores.

With `m3el_hf.evaluation.mteb_tasks` it imports only ``mteb``, ``datasets`` and ``numpy``, so both files can be
proposed to embeddings-benchmark/mteb as they are.

Each task pairs a mention modality with an entity modality (text ``T``, image ``I``, text+image ``TI``):

- ``M3EL{m}2{e}Candidates``: a mention ranks its own candidate list (M³EL's protocol; ``top_ranked``).
- ``M3EL{m}2{e}Kb``: a mention ranks every entity of its topic's knowledge base (the ``{topic}-kb`` config).
- ``…LeakFree`` (tasks with a mention image): the same without the instances whose mention image is a copy or a
  near-duplicate of the gold's (column ``mention_image_leak``; the release stores a mention's image as its gold
  entity's file).

The five topics are the subsets; the split is ``test``. An instance lacking its task's mention modality, or
whose gold lacks the entity modality, is left out and counted (``excluded``); any other entity lacking it is
left out of the ranking, which is where a score of ``-inf`` would put it. Queries are the mention text and/or the
mention image; the text is the task's ``mention_template`` over ``{mention}`` and ``{sentence}``, given by whoever
builds the task (``m3el-hf evaluate`` gives CLIP_ND's), or without one the mention and its sentence joined by a
space, as MTEB joins a document's title and text. Documents are ``title`` (name), ``text`` (description) and/or
``image``, so MTEB hands a model ``"{name} {description}"``; the raw fields stay in the batches (``mention``,
``sentence``, ``title``, ``body``) for models with their own templates.

The main score ``expected_accuracy`` counts ties honestly: with ``g`` entities scored above the gold and ``t``
others tied with it, the gold's rank is uniform on ``g+1 … g+t+1``, so Hits@k is ``clip(k - g, 0, t+1)/(t+1)``,
the reciprocal rank is the mean of ``1/r`` over that range and the rank its midpoint ``g + 1 + t/2``
(``expected_mean_rank``, lower is better). Scores within `TIE_ULPS` float32 ulps of the
gold's are a tie (about 1e-6 for cosine scores): encoding an input in another batch, and matrix products, move
equal scores by a few ulps of the scale of their terms. The ranking is read to MTEB's retrieval
depth (`RETRIEVAL_DEPTH`); a gold ranked below it counts 0, which can only lower a ``Kb`` task's MRR, by less
than ``1/RETRIEVAL_DEPTH`` per such mention, and counts rank ``RETRIEVAL_DEPTH + 1``, which can only make its mean
rank look better.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from mteb.abstasks.retrieval import AbsTaskRetrieval

logger = logging.getLogger(__name__)

TOPICS = ("movies", "common", "person", "books", "sports")
SPLIT = "test"
KB_SPLIT = "kb"
TIE_ULPS = 8
"""Scores this many float32 ulps or closer to the gold's are tied with it. The ulp is that of the query's largest
absolute score, and at least that of 1 (the norm of cosine embeddings): rounding errors scale with a dot
product's terms, not with its result."""
RETRIEVAL_DEPTH = 1000
KS = (1, 3, 5)
LEAK_COLUMN = "mention_image_leak"
LEAKED = ("copy", "near")

_LOCAL = "local"  # the revision recorded for a folder, which has none
CATEGORY = {"T": "t", "I": "i", "TI": "it"}
_MODALITY = {category: modality for modality, category in CATEGORY.items()}


class AbsTaskM3EL(AbsTaskRetrieval):
    """One M³EL task; the modalities come from the metadata's category, the protocol from its name."""

    # MTEB's own metrics at @1 only: each k costs 15 abstention metrics per topic (most of MTEB's scoring time);
    # the expected_* scores cover Hits@1/3/5 and MRR. The ranking depth is `RETRIEVAL_DEPTH` whatever k is.
    k_values = (1,)

    def __init__(
        self, dataset: dict[str, str] | str | None = None, mention_template: str | None = None, **kwargs: Any
    ) -> None:
        """`dataset`: a Hub repo id, ``{"path", "revision"}``, or a folder written by ``m3el-hf prepare``;
        `mention_template`: a query's text from ``{mention}`` and ``{sentence}`` (default: the two joined by a space).
        """
        super().__init__(**kwargs)
        self.mention_template = mention_template
        self._top_k = RETRIEVAL_DEPTH
        if dataset is not None:
            source = {"path": dataset, "revision": None} if isinstance(dataset, str) else dict(dataset)
            source["revision"] = _LOCAL if Path(source["path"]).is_dir() else source.get("revision") or "main"
            self.metadata = self.metadata.model_copy(update={"dataset": source})
        mention, entity = self.metadata.category.split("2")
        self.mention, self.entity = _MODALITY[mention], _MODALITY[entity]
        self.ranks_kb = "Kb" in self.metadata.name
        self.leak_free = self.metadata.name.endswith("LeakFree")
        self.counts: dict[str, dict[str, int]] = {}

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build queries, corpus, relevant docs and candidate lists of every topic from the prepared configs.

        A topic too small to have a split (``prepare`` leaves empty splits out) is left out with a warning, as
        ``m3el-hf evaluate`` does; no topic having it is an error.
        """
        if self.data_loaded:
            return
        self.dataset = {}
        for split in self.eval_splits:
            lacking = [topic for topic in self.hf_subsets if split not in self._splits(topic)]
            if len(lacking) == len(self.hf_subsets):
                raise ValueError(
                    f"{self.metadata.dataset['path']}: no topic of {self.hf_subsets} has a {split!r} split."
                )
            if lacking:
                logger.warning(
                    "%s: topic(s) %s have no %r split; left out.", self.metadata.dataset["path"], lacking, split
                )
            self.hf_subsets = [topic for topic in self.hf_subsets if topic not in lacking]
            for topic in self.hf_subsets:
                self.dataset.setdefault(topic, {})[split] = self._load_split(topic, split)
        self.data_loaded = True

    def _source(self) -> tuple[str, str | None, int | None]:
        """The dataset's path, revision (None for a folder) and, for a folder, its card's modification time."""
        path, revision = self.metadata.dataset["path"], self.metadata.dataset.get("revision")
        card = Path(path, "README.md")
        stamp = card.stat().st_mtime_ns if card.is_file() else None  # a folder prepared again is read again
        return path, None if revision == _LOCAL else revision, stamp

    def _splits(self, config: str) -> tuple[str, ...]:
        path, revision, stamp = self._source()
        return _split_names(path, revision, config, stamp)

    def _read(self, config: str, split: str) -> datasets.Dataset:
        path, revision, stamp = self._source()
        return _load(path, config, split, revision, stamp)

    def _load_split(self, topic: str, split: str) -> dict[str, Any]:
        rows = self._read(topic, split)
        if self.leak_free and LEAK_COLUMN not in rows.column_names:
            raise ValueError(
                f"{self.metadata.dataset['path']} ({topic}, {split}) has no {LEAK_COLUMN!r} column; the leak-free "
                "tasks need a release prepared with it."
            )
        corpus = _Corpus(self.entity)
        kb = self._kb(topic, corpus) if self.ranks_kb else None
        queries: dict[str, list[Any]] = {"id": [], "text": [], "mention": [], "sentence": [], "image": []}
        relevant, top_ranked = {}, {}
        counts = {"evaluated": 0, "excluded": 0, "leaked": 0}
        columns = ["id", "mention", "sentence", "mention_image", "candidates", "candidate_images", "label"]
        for row in _undecoded(rows, columns + ([LEAK_COLUMN] if self.leak_free else [])):
            where = f"{self.metadata.dataset['path']} ({topic}, {split}) instance {row['id']!r}"
            candidates, images, gold = _candidates(row, where)
            if kb is not None and gold["qid"] not in kb:
                raise ValueError(f"{where}: gold entity {gold['qid']!r} is not in the {topic!r} knowledge base.")
            verdict = self._verdict(row, images[row["label"]], kb[gold["qid"]] if kb is not None else None)
            counts[verdict] += 1
            if verdict != "evaluated":
                continue
            if row["id"] in relevant:
                raise ValueError(f"{where} appears twice; instance ids must be unique within a split.")
            for column, value in self._query(row).items():
                queries[column].append(value)
            if kb is None:
                docs = [corpus.add(c, image) for c, image in zip(candidates, images, strict=True)]
                top_ranked[row["id"]] = corpus.distinct([doc for doc in docs if doc is not None])
                relevant[row["id"]] = {docs[row["label"]]: 1}
            else:
                relevant[row["id"]] = {kb[gold["qid"]]: 1}
        self.counts[f"{topic}/{split}"] = counts
        return {
            "queries": self._queries(queries),
            "corpus": corpus.dataset(),
            "relevant_docs": relevant,
            "top_ranked": top_ranked if kb is None else None,
        }

    def _verdict(self, row: dict[str, Any], gold_image: dict[str, Any] | None, kb_doc: Any) -> str:
        """``"excluded"`` (lacking the mention modality, or the gold lacking the entity modality; `kb_doc` is the
        gold's KB document, None when it lacks it), ``"leaked"`` or ``"evaluated"``."""
        lacks_entity = kb_doc is None if self.ranks_kb else self.entity != "T" and not _has_image(gold_image)
        if (self.mention != "T" and not _has_image(row["mention_image"])) or lacks_entity:
            return "excluded"
        if self.leak_free and row[LEAK_COLUMN] in LEAKED:
            return "leaked"
        return "evaluated"

    def _kb(self, topic: str, corpus: _Corpus) -> dict[str, str | None]:
        """Every entity of the topic's knowledge base into `corpus`; qid → document id (None: lacks the modality)."""
        docs: dict[str, str | None] = {}
        for row in _undecoded(self._read(f"{topic}-kb", KB_SPLIT), ["qid", "name", "description", "image"]):
            if row["qid"] in docs:
                raise ValueError(f"The {topic!r} knowledge base lists entity {row['qid']!r} twice.")
            docs[row["qid"]] = corpus.add(row, row["image"])
        return docs

    def _query(self, row: dict[str, Any]) -> dict[str, Any]:
        mention, sentence = row["mention"] or "", row["sentence"] or ""
        if self.mention_template is None:
            text = f"{mention} {sentence}".strip()
        else:
            text = self.mention_template.format(mention=mention, sentence=sentence)
        return {"id": row["id"], "text": text, "mention": mention, "sentence": sentence, "image": row["mention_image"]}

    def _queries(self, columns: dict[str, list[Any]]) -> datasets.Dataset:
        features = {name: datasets.Value("string") for name in ("id", "text", "mention", "sentence")}
        if self.mention == "T":
            del columns["image"]
        else:
            features["image"] = datasets.Image()
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    def _evaluate_subset(self, model: Any, data_split: Any, **kwargs: Any) -> dict[str, Any]:
        if len(data_split["queries"]):
            return super()._evaluate_subset(model, data_split, **kwargs)
        # Nothing to rank (e.g. an image task on a split without images): MTEB's metrics need one query.
        empty = {"expected_accuracy": math.nan, "expected_mrr": math.nan, "expected_mean_rank": math.nan}
        empty.update({f"expected_hits_at_{k}": math.nan for k in KS})
        return {**empty, **self._counts(kwargs["hf_subset"], kwargs["hf_split"])}

    def _counts(self, topic: str, split: str) -> dict[str, int]:
        return dict(self.counts.get(f"{topic}/{split}", {}))

    def task_specific_scores(
        self,
        scores: dict[str, dict[str, float]],
        qrels: dict[str, dict[str, int]],
        results: dict[str, dict[str, float]],
        hf_split: str,
        hf_subset: str,
    ) -> dict[str, float]:
        """Tie-honest accuracy, Hits@k, MRR and mean rank (expected values under random tie-breaking), and the
        counts."""
        greater, tied = _tie_counts(qrels, results)
        out = {f"expected_hits_at_{k}": _expected_hits(greater, tied, k) for k in KS}
        out["expected_accuracy"] = out["expected_hits_at_1"]
        out["expected_mrr"] = float(np.mean(_expected_reciprocal_ranks(greater, tied)))
        out["expected_mean_rank"] = float(np.mean(1 + greater + tied / 2)) if greater.size else math.nan
        return {**out, **self._counts(hf_subset, hf_split)}


class _Corpus:
    """Documents keyed by content (qid, name, description, image), so that equal entities are one document."""

    def __init__(self, modality: str) -> None:
        self.modality = modality
        self.ids: dict[tuple[str, str, str, str], str] = {}
        self.position: dict[str, int] = {}
        self.rows: dict[str, list[Any]] = {"id": [], "title": [], "text": [], "image": []}

    def add(self, entity: dict[str, Any], image: dict[str, Any] | None) -> str | None:
        """The document id of `entity` with `image`; None when it lacks the task's entity modality."""
        if self.modality != "T" and not _has_image(image):
            return None
        digest = _image_key(image) if _has_image(image) else ""
        name, description = entity.get("name") or "", entity.get("description") or ""
        key = (entity["qid"], name, description, digest if self.modality != "T" else "")
        doc = self.ids.get(key)
        if doc is None:
            doc = self.ids[key] = self._append(entity["qid"], (name, description, image))
        return doc

    def _append(self, doc: str, values: tuple[Any, ...]) -> str:
        """Add a document (a new id if `doc` is taken) and return its id."""
        if doc in self.position:
            doc = f"{doc}#{len(self.position)}"
        self.position[doc] = len(self.rows["id"])
        for column, value in zip(self.rows, (doc, *values), strict=True):
            self.rows[column].append(value)
        return doc

    def distinct(self, docs: list[str]) -> list[str]:
        """`docs` with a repeated document replaced by a copy of it, so that a list naming one entity twice ranks
        both occurrences, as the candidate list does."""
        seen: set[str] = set()
        out = []
        for doc in docs:
            if doc in seen:
                i = self.position[doc]
                doc = self._append(doc, tuple(self.rows[column][i] for column in ("title", "text", "image")))
            seen.add(doc)
            out.append(doc)
        return out

    def dataset(self) -> datasets.Dataset:
        features = {name: datasets.Value("string") for name in ("id", "title", "text")}
        rows = dict(self.rows)
        if self.modality == "T":
            del rows["image"]
        else:
            features["image"] = datasets.Image()
        return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


@functools.lru_cache(maxsize=32)
def _load(path: str, config: str, split: str, revision: str | None, stamp: int | None) -> datasets.Dataset:
    """One config's split, memory-mapped; kept for the other tasks, which read the same topics (loading a
    config parses the dataset card each time). `stamp`, a local card's modification time, is only part of the key."""
    return datasets.load_dataset(path, config, split=split, revision=revision)


@functools.lru_cache(maxsize=32)
def _split_names(path: str, revision: str | None, config: str, stamp: int | None) -> tuple[str, ...]:
    return tuple(datasets.get_dataset_split_names(path, config, revision=revision))


def _candidates(row: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """An instance's candidates, their images (None where missing) and its gold; errors name the instance."""
    candidates = row["candidates"]
    images = row["candidate_images"] or [None] * len(candidates)
    if len(images) != len(candidates):
        raise ValueError(f"{where}: {len(images)} candidate images for {len(candidates)} candidates.")
    if not 0 <= row["label"] < len(candidates):
        raise ValueError(f"{where}: label {row['label']} is out of range for {len(candidates)} candidates.")
    return candidates, images, candidates[row["label"]]


def _undecoded(rows: datasets.Dataset, columns: list[str]) -> Iterator[dict[str, Any]]:
    """The rows' `columns` as Python values, images left as their ``{"bytes", "path"}``."""
    for table in rows.select_columns(columns).with_format("arrow").iter(batch_size=512):
        yield from table.to_pylist()


def _image_key(image: dict[str, Any]) -> str:
    """An undecoded image's identity: a hash of its bytes, or its path when it has none."""
    return hashlib.blake2b(image["bytes"], digest_size=16).hexdigest() if image.get("bytes") else image["path"]


def _has_image(value: dict[str, Any] | None) -> bool:
    return bool(value and (value.get("bytes") or value.get("path")))


def _tie_counts(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]]) -> tuple[np.ndarray, ...]:
    """Per query: entities scored above the gold, and others tied with it (`_gold_counts`)."""
    counts = [
        _gold_counts(results.get(query, {}), next(doc for doc, grade in relevant.items() if grade > 0))
        for query, relevant in qrels.items()
    ]
    greater, tied = zip(*counts, strict=True) if counts else ((), ())
    return np.asarray(greater, dtype=np.int64), np.asarray(tied, dtype=np.int64)


def _gold_counts(ranking: dict[str, float], gold: str) -> tuple[int, int]:
    """Entities above the gold and others tied with it in one query's ranking. A gold not retrieved is below the
    depth; a gold scored NaN or -inf ranks last, as in ``m3el-hf evaluate``."""
    if gold not in ranking:
        return max(RETRIEVAL_DEPTH, len(ranking)), 0
    gold_score = ranking[gold]
    if math.isnan(gold_score) or gold_score == -math.inf:
        return len(ranking) - 1, 0
    scores = np.fromiter(ranking.values(), dtype=np.float64, count=len(ranking))
    scale = max(1.0, float(np.abs(scores[np.isfinite(scores)]).max(initial=0.0)))
    tolerance = TIE_ULPS * float(np.spacing(np.float32(scale)))
    with np.errstate(invalid="ignore"):  # inf - inf, for a gold scored +inf
        tied = (np.abs(scores - gold_score) <= tolerance) | (scores == gold_score)
    return int(np.count_nonzero(scores > gold_score + tolerance)), int(np.count_nonzero(tied)) - 1


def _expected_hits(greater: np.ndarray, tied: np.ndarray, k: int) -> float:
    if not greater.size:
        return math.nan
    return math.fsum(np.clip(k - greater, 0, tied + 1) / (tied + 1)) / greater.size


def _expected_reciprocal_ranks(greater: np.ndarray, tied: np.ndarray) -> np.ndarray:
    if not greater.size:
        return np.full(1, math.nan)
    out = np.zeros(len(greater))
    retrieved = greater < RETRIEVAL_DEPTH
    for i in np.flatnonzero(retrieved):
        out[i] = np.mean(1.0 / np.arange(greater[i] + 1, greater[i] + tied[i] + 2))
    return out
