"""M³EL as a Hub benchmark: its task ids, the scored split and protocol, and the dataset's ``eval.yaml``."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from ..tasks import TASK_NAMES

__all__ = ["BENCHMARK_SPLIT", "HEADLINE_PROTOCOL", "benchmark_tasks", "eval_yaml", "task_id"]


BENCHMARK_SPLIT = "test"


HEADLINE_PROTOCOL = "candidates"


_ALL_TOPICS = "all"  # the pooled topic of the results records (evaluation.ALL_TOPICS)


_DESCRIPTION = (
    "M³EL (arXiv 2410.18096): multi-modal entity linking over five topics (movies, common, person, books, "
    "sports) and nine tasks pairing a mention modality with an entity modality in {T, I, TI}. Each task id is "
    "the dataset config `{topic}-{task}` (`all-{task}` pools every topic), scored on the test split. The "
    "headline metric is accuracy (accuracy@1) of ranking the instance's own candidate list; ties between "
    "candidate scores count as their expected value under uniform random tie-breaking. Whole-knowledge-base "
    "ranking is a different protocol and is not part of this leaderboard."
)


def task_id(topic: str, task: str) -> str:
    """The benchmark task id of `task` on `topic` (``"all"`` for every topic): the dataset config name.

    >>> task_id("movies", "T-TI")
    'movies-T-TI'
    """
    return f"{topic}-{task}"


def benchmark_tasks(topics: Sequence[str]) -> list[dict[str, str]]:
    """The ``tasks`` of ``eval.yaml``: each topic × task, then ``all-{task}``, all on the test split."""
    groups = [*topics, _ALL_TOPICS] if _ALL_TOPICS not in topics else list(topics)
    return [
        {"id": task_id(topic, task), "config": task_id(topic, task), "split": BENCHMARK_SPLIT}
        for topic in groups
        for task in TASK_NAMES
    ]


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
