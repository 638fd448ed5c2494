"""Where a prepared M³EL folder keeps each file: ``prepare`` writes them there, and the dataset card, the
builder, the loaders, ``show``, ``evaluate`` and the pushes find them there.

::

    m3el/
      README.md                                    dataset card; its YAML declares every config
      LICENSE.md                                   the terms of the data (Commons images, Wikidata text, the release)
      eval.yaml                                    the benchmark's tasks (`m3el_hf.benchmark`)
      prepare_report.json                          counts, data audit, what was skipped, synthetic or not (versioned)
      data/{topic}/{split}-00000-of-0000N.parquet  the instances of one topic and split
      kb/{topic}/kb-00000-of-0000N.parquet         a topic's knowledge base (split ``kb``)

Shard names follow the Hub's convention (``{split}-{i:05d}-of-{n:05d}.parquet``), so stock `datasets` maps each
file to its split.
"""

from __future__ import annotations

__all__ = [
    "CARD_NAME",
    "EVAL_YAML_NAME",
    "LICENSE_NAME",
    "REPORT_NAME",
    "instance_path",
    "kb_path",
    "shard_name",
]

CARD_NAME = "README.md"
LICENSE_NAME = "LICENSE.md"
"""The notice on the mixed terms of the data, next to the card; the card's ``license_link`` points at it."""
EVAL_YAML_NAME = "eval.yaml"
REPORT_NAME = "prepare_report.json"


def instance_path(topic: str, split: str) -> str:
    """Glob of a topic's Parquet shards for one split, relative to the folder.

    >>> instance_path("movies", "test")
    'data/movies/test-*.parquet'
    """
    return f"data/{topic}/{split}-*.parquet"


def kb_path(topic: str, split: str) -> str:
    """Glob of a topic's knowledge-base shards (their split is ``kb``), relative to the folder."""
    return f"kb/{topic}/{split}-*.parquet"


def shard_name(split: str, index: int, count: int) -> str:
    """The file name of shard `index` (from 0) of `count` of a split.

    >>> shard_name("train", 0, 2)
    'train-00000-of-00002.parquet'
    """
    return f"{split}-{index:05d}-of-{count:05d}.parquet"
