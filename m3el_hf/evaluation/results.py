"""Evaluation results: the records' format, `EvaluationResult`, the results JSON file and the terminal tables."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..benchmark import ALL_TOPICS, HEADLINE_PROTOCOL
from ..json_files import read_json, write_json
from ..provenance import Provenance

__all__ = [
    "METRIC_KEYS",
    "RECORD_KEYS",
    "EvaluationResult",
    "add_overall",
    "format_table",
    "is_missing",
    "percent",
    "read_results",
    "show_metric",
    "topic_seen",
    "unique",
    "write_results",
]


METRIC_KEYS: tuple[str, ...] = ("accuracy", "hits@1", "hits@3", "hits@5", "mrr", "mr")
"""The metrics of every record; ``mr`` (mean rank, 1-based) is the one where lower is better."""


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
    "leaked",
    "ties",
    "entity_text",
    "seen",
)
"""The keys of every record, in order; metrics are ``NaN`` (``null`` in JSON) when nothing was evaluated.
``excluded`` counts instances lacking a modality of the task; ``leaked`` those a leak-free protocol leaves
out because the mention's image is a copy or near-duplicate of the gold's (0 under the other protocols);
``entity_text`` names the entity text variant (``full`` unless ``evaluate --entity-text`` degraded it);
``seen`` says whether the checkpoint was trained on the topic (`topic_seen`), ``null`` when that is unknown (no
training summary) and, for the overall topic, when its topics differ."""


@dataclass
class EvaluationResult:
    """The records of one model's evaluation: one per (protocol, topic, task), the overall topic ``"all"`` included.

    >>> result = evaluate_model(model, tokenizer, image_processor, test_set)  # doctest: +SKIP
    >>> result.mean_accuracy()  # doctest: +SKIP
    0.83
    """

    records: list[dict[str, Any]] = field(default_factory=list)

    def mean_accuracy(self, protocol: str = HEADLINE_PROTOCOL, topic: str = ALL_TOPICS) -> float:
        """Macro mean accuracy over the tasks evaluated for `protocol` and `topic` (``NaN`` if none was)."""
        return _mean_accuracy(self.records, protocol, topic)

    def table(self, metrics: Sequence[str] = ("accuracy",)) -> str:
        """Each metric (in %, the mean rank as is) per task (rows) and topic (columns), the instances evaluated in
        brackets; one block per protocol and metric, for the terminal."""
        blocks = []
        for protocol in unique(r["protocol"] for r in self.records):
            records = [r for r in self.records if r["protocol"] == protocol]
            topics, tasks = unique(r["topic"] for r in records), unique(r["task"] for r in records)
            seen = {r["topic"]: r["seen"] for r in records}
            cells = {(r["task"], r["topic"]): r for r in records}
            for metric in metrics:
                rows = [[task, *(_cell(cells.get((task, topic)), metric) for topic in topics)] for task in tasks]
                rows.append(
                    ["mean", *(show_metric(_mean_accuracy(records, protocol, t, metric), metric) for t in topics)]
                )
                unit = "(lower is better)" if metric == "mr" else "(%)"
                title = (
                    f"{records[0]['model']}: {metric} {unit} (instances evaluated), protocol {protocol!r}, "
                    f"split {records[0]['split']!r}, entity text {records[0]['entity_text']!r}"
                )
                blocks.append(_render(title, ["task", *(_topic_header(t, seen[t]) for t in topics)], rows))
        return "\n\n".join(blocks)


def add_overall(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`records` (per topic) with an `ALL_TOPICS` record after each (model, protocol, task)'s topics.

    Its metrics are the unweighted means over the topics that evaluated at least one instance (``NaN`` when
    none did), as MTEB averages a task's subsets; ``evaluated``, ``excluded`` and ``leaked`` are sums.
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        if record["topic"] != ALL_TOPICS:
            groups.setdefault((record["model"], record["protocol"], record["task"]), []).append(record)
    out: list[dict[str, Any]] = []
    for group in groups.values():
        out += [dict(record) for record in group]
        scored = [record for record in group if record["evaluated"]]
        marks = unique(record["seen"] for record in group)
        overall = {**group[0], "topic": ALL_TOPICS, "seen": marks[0] if len(marks) == 1 else None}
        for key in METRIC_KEYS:
            overall[key] = math.fsum(r[key] for r in scored) / len(scored) if scored else float("nan")
        for key in ("evaluated", "excluded", "leaked"):
            overall[key] = sum(record[key] for record in group)
        out.append(overall)
    return out


def write_results(path: str | os.PathLike[str], results: Sequence[EvaluationResult], provenance: Provenance) -> Path:
    """Write every model's records to one JSON file, atomically; empty cells are ``null``.

    The file is ``{"format_version": 1, "dataset": ..., "synthetic": ..., "provenance": ..., "ties": ...,
    "records": [...]}`` (`m3el_hf.json_files`), the input of model cards, plots and leaderboard entries.

    Args:
        path (`str` or `os.PathLike`): The JSON file to write; its folder is created.
        results (`Sequence[EvaluationResult]`): One per model, all with the same tie handling.
        provenance (`Provenance`): How they were made: harness, versions, the data, its revision, synthetic or not.

    Returns:
        `Path`: `path`.
    """
    records = [record for result in results for record in result.records]
    ties = unique(record["ties"] for record in records)
    if len(ties) > 1:
        raise ValueError(f"The results mix tie handlings {ties}; evaluate every model with the same `ties`.")
    nulled = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]
    payload = {
        "dataset": provenance.dataset,
        "synthetic": provenance.synthetic,
        "provenance": provenance.to_dict(),
        "ties": ties[0] if ties else None,
        "records": nulled,
    }
    return write_json(path, payload, ensure_ascii=False, allow_nan=False)


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a file written by [`write_results`], in its order; ``null`` metrics come back as ``NaN``."""
    records = read_json(path).get("records")
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path} has no list of records; write it with `m3el-hf evaluate`.")
    for i, record in enumerate(records):
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}; rewrite the file with `m3el-hf evaluate`.")
        record.update({key: float("nan") for key in METRIC_KEYS if record[key] is None})
    return records


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy (%) of each model (columns) per task (rows), over all topics (their mean), one block per protocol."""
    blocks = []
    for protocol in unique(r["protocol"] for r in records):
        overall = [r for r in records if r["protocol"] == protocol and r["topic"] == ALL_TOPICS]
        models = unique(r["model"] for r in overall)
        cells = {(r["task"], r["model"]): r["accuracy"] for r in overall}
        tasks = unique(r["task"] for r in overall)
        evaluated = {r["task"]: r["evaluated"] for r in overall}  # the same instances for every model
        rows = [[task, str(evaluated[task]), *(percent(cells.get((task, m))) for m in models)] for task in tasks]
        means = [_mean_accuracy([r for r in overall if r["model"] == m], protocol, ALL_TOPICS) for m in models]
        rows.append(["mean", "", *map(percent, means)])
        variants = ", ".join(unique(r["entity_text"] for r in overall))
        title = f"Accuracy (%), protocol {protocol!r}, all topics, entity text {variants}"
        blocks.append(_render(title, ["task", "instances", *models], rows))
    return "\n\n".join(blocks)


def topic_seen(topic: str, trained_topics: Sequence[str] | None) -> bool | None:
    """Whether a checkpoint trained on `trained_topics` saw `topic` in training; None when they are unknown.

    >>> topic_seen("sports", ["movies", "books"]), topic_seen("sports", None)
    (False, None)
    """
    return None if trained_topics is None else topic in trained_topics


def _topic_header(topic: str, seen: bool | None) -> str:
    """A topic's column title: marked seen or unseen in training when the checkpoint says."""
    return topic if seen is None else f"{topic} ({'seen' if seen else 'unseen'})"


def _cell(record: Mapping[str, Any] | None, metric: str) -> str:
    return "—" if record is None else f"{show_metric(record[metric], metric)} ({record['evaluated']})"


def show_metric(value: float | None, metric: str) -> str:
    """A metric for a table: the mean rank with two decimals, the others in percent."""
    if metric != "mr" or is_missing(value):
        return percent(value)
    return f"{value:.2f}"


def _mean_accuracy(records: Iterable[Mapping[str, Any]], protocol: str, topic: str, metric: str = "accuracy") -> float:
    values = [r[metric] for r in records if r["protocol"] == protocol and r["topic"] == topic]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(values) / len(values) if values else float("nan")


def unique(values: Iterable[Any]) -> list[Any]:
    """`values` without repeats, in the order first seen."""
    return list(dict.fromkeys(values))


def is_missing(value: Any) -> bool:
    """Whether a metric is absent: ``None`` (JSON ``null``) or ``NaN`` (how `read_results` returns it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: float | None) -> str:
    """A score in percent with one decimal, or ``—`` where it is missing (``None`` or ``NaN``)."""
    return "—" if is_missing(value) else f"{100 * value:.1f}"


def _render(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # The first column (task names) reads left-aligned, the numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
