"""Loading prepared M³EL data (a folder written by ``prepare`` or a Hub repo) with stock `datasets`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import datasets

from ..tasks import TOPICS, did_you_mean

__all__ = ["check_config", "data_topics", "load_topic_splits", "resolve_topics"]

logger = logging.getLogger(__name__)


def check_config(data: str, name: str) -> None:
    """Refuse a config that a prepared folder does not declare, with the closest name and how to list them."""
    names = datasets.get_dataset_config_names(data)
    if name not in names:
        raise ValueError(
            f"{data} has no config {name!r}{did_you_mean(name, names) or ';'} it has {len(names)}, e.g. "
            f"{', '.join(names[:4])} (m3el-hf show {data} --config NAME loads one)."
        )


def data_topics(data: str, revision: str | None = None) -> tuple[str, ...]:
    """The topics of prepared `data`: M³EL's that it has, in their order; else each config with a knowledge base
    (a dataset's own name, as ``prepare --format mimic`` writes it)."""
    names = set(datasets.get_dataset_config_names(data, revision=revision))
    topics = tuple(topic for topic in TOPICS if topic in names) or tuple(
        name for name in sorted(names) if f"{name}-kb" in names and name != "all"
    )
    if not topics:
        raise ValueError(f"{data} has no topic config (such as {TOPICS[0]}); is it a folder written by prepare?")
    return topics


def resolve_topics(data: str, topics: Sequence[str] | None, revision: str | None = None) -> tuple[str, ...]:
    """`topics` when `data` has each of them, every topic it has when None; else a one-line `ValueError`
    naming `data` and its topics."""
    have = data_topics(data, revision)
    if topics is None:
        return have
    missing = [topic for topic in topics if topic not in have]
    if missing:
        guess = did_you_mean(missing[0], have) or "."
        raise ValueError(f"{data} has no topic(s) {missing}{guess} Its topics: {', '.join(have)}.")
    return tuple(topics)


def load_topic_splits(
    data: str, topics: Sequence[str] | None, split: str, revision: str | None = None
) -> dict[str, datasets.Dataset]:
    """`split` of each topic config of `data` (at `revision`, for a Hub id), by topic; every topic it has when
    `topics` is None (`resolve_topics`; callers that resolved them already pass them).

    A topic too small to have that split (prepare leaves empty splits out of the card) is left out with a
    warning; no topic having it is an error.
    """
    topics = resolve_topics(data, None, revision) if topics is None else topics
    loaded = {topic: datasets.load_dataset(data, topic, revision=revision) for topic in topics}
    found = {topic: splits[split] for topic, splits in loaded.items() if split in splits}
    if not found:
        raise ValueError(
            f"{data}: no topic of {list(topics)} has a {split!r} split; choose another split, or prepare more "
            "instances (splits are 80/10/10 of each topic)."
        )
    lacking = [topic for topic in topics if topic not in found]
    if lacking:
        logger.warning("%s: topic(s) %s have no %r split (too few instances); using the others.", data, lacking, split)
    return found
