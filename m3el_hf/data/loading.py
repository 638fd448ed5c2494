"""Loading prepared M³EL data (a folder written by ``prepare`` or a Hub repo) with stock `datasets`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import datasets

from ..tasks import did_you_mean

__all__ = ["check_config", "load_topic_splits"]

logger = logging.getLogger(__name__)


def check_config(data: str, name: str) -> None:
    """Refuse a config that a prepared folder does not declare, with the closest name and how to list them."""
    names = datasets.get_dataset_config_names(data)
    if name not in names:
        raise ValueError(
            f"{data} has no config {name!r}{did_you_mean(name, names) or ';'} it has {len(names)}, e.g. "
            f"{', '.join(names[:4])} (m3el-hf show {data} --config NAME loads one)."
        )


def load_topic_splits(
    data: str, topics: Sequence[str], split: str, revision: str | None = None
) -> dict[str, datasets.Dataset]:
    """`split` of each topic config of `data` (at `revision`, for a Hub id), by topic.

    A topic too small to have that split (prepare leaves empty splits out of the card) is left out with a
    warning; no topic having it is an error.
    """
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
