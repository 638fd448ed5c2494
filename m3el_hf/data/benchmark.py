"""M³EL as a Hub benchmark: its task ids, the scored split and protocol, and the dataset's ``eval.yaml``."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from ..tasks import TASK_NAMES, get_task

__all__ = ["BENCHMARK_SPLIT", "HEADLINE_PROTOCOL", "LEAK_FREE_PROTOCOL", "benchmark_tasks", "eval_yaml", "task_id"]


BENCHMARK_SPLIT = "test"


HEADLINE_PROTOCOL = "candidates"


LEAK_FREE_PROTOCOL = "candidates-leak-free"
"""The headline protocol without the instances whose mention image copies the gold's (`m3el_hf.data.leak`)."""


_ALL_TOPICS = "all"  # the pooled topic of the results records (evaluation.ALL_TOPICS)


_DESCRIPTION = (
    "M³EL (arXiv 2410.18096): multi-modal entity linking over five topics (movies, common, person, books, "
    "sports) and nine tasks pairing a mention modality with an entity modality in {T, I, TI}. Each task id is "
    "the dataset config `{topic}-{task}` (`all-{task}` pools every topic), scored on the test split. The "
    "headline metric is accuracy (accuracy@1) of ranking the instance's own candidate list; ties between "
    "candidate scores count as their expected value under uniform random tie-breaking. For the six tasks with "
    "an image on the mention side, `{topic}-{task}-leak-free` scores the same config without the instances "
    "whose mention image is a copy or near-duplicate of the gold's (column `mention_image_leak`: the release "
    "stores a mention's image as the gold's file). Whole-knowledge-base ranking is a different protocol and is "
    "not part of this leaderboard."
)


def task_id(topic: str, task: str, protocol: str = HEADLINE_PROTOCOL) -> str:
    """The benchmark task id of `task` on `topic` (``"all"`` for every topic) under `protocol`.

    The headline protocol's id is the dataset config name; the leak-free protocol's adds ``-leak-free``.

    >>> task_id("movies", "T-TI")
    'movies-T-TI'
    >>> task_id("movies", "I-I", "candidates-leak-free")
    'movies-I-I-leak-free'
    """
    if protocol not in (HEADLINE_PROTOCOL, LEAK_FREE_PROTOCOL):
        raise ValueError(
            f"No benchmark task for protocol {protocol!r}: only {HEADLINE_PROTOCOL} and its leak-free twin."
        )
    suffix = "-leak-free" if protocol == LEAK_FREE_PROTOCOL else ""
    return f"{topic}-{task}{suffix}"


def benchmark_tasks(topics: Sequence[str]) -> list[dict[str, str]]:
    """The ``tasks`` of ``eval.yaml``: each topic × task, then ``all-{task}``, all on the test split; after each
    task with an image on the mention side, its leak-free twin (same config)."""
    groups = [*topics, _ALL_TOPICS] if _ALL_TOPICS not in topics else list(topics)
    tasks = []
    for topic in groups:
        for task in TASK_NAMES:
            protocols = [HEADLINE_PROTOCOL] + ([LEAK_FREE_PROTOCOL] if get_task(task).mention_needs_image else [])
            tasks += [
                {"id": task_id(topic, task, protocol), "config": task_id(topic, task), "split": BENCHMARK_SPLIT}
                for protocol in protocols
            ]
    return tasks


def eval_yaml(
    topics: Sequence[str],
    *,
    dataset_name: str = "M³EL",
    description: str = _DESCRIPTION,
    evaluation_framework: str = "m3el-hf",
) -> str:
    """Render the ``eval.yaml`` that registers a prepared M³EL dataset repo as a Hub benchmark. Pure.

    Args:
        topics (`Sequence[str]`):
            The prepared topics; every topic × task config and the ``all-{task}`` configs become tasks.
        dataset_name (`str`, *optional*, defaults to `"M³EL"`):
            The benchmark's display name.
        description (`str`, *optional*):
            Shown on the benchmark page; the default states the id scheme and the headline metric.
        evaluation_framework (`str`, *optional*, defaults to `"m3el-hf"`):
            The harness that produces the scores (`m3el-hf evaluate`).
    """
    payload = {
        "name": dataset_name,
        "description": description,
        "evaluation_framework": evaluation_framework,
        "tasks": benchmark_tasks(topics),
    }
    return yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=100)
