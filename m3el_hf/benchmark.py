"""M³EL as a Hub benchmark: the task ids, the dataset's ``eval.yaml`` and the models' ``.eval_results/*.yaml``.

The Hub's leaderboards (hub-docs ``eval-results.md``) join two files: a benchmark dataset's
``eval.yaml`` declares tasks ``{id, config, split}``, and a model repo's ``.eval_results/*.yaml``
entries point at ``{dataset id, task_id}`` with one value. [`task_id`] is the only place the id
scheme is defined, so both sides always agree.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write
from .tasks import TASK_NAMES

__all__ = [
    "BENCHMARK_SPLIT",
    "EVAL_RESULTS_DIR",
    "HEADLINE_PROTOCOL",
    "benchmark_tasks",
    "eval_result_entries",
    "eval_results_files",
    "eval_yaml",
    "is_missing",
    "task_id",
    "write_eval_results",
]

logger = logging.getLogger(__name__)

BENCHMARK_SPLIT = "test"
HEADLINE_PROTOCOL = "candidates"
EVAL_RESULTS_DIR = ".eval_results"
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


def is_missing(value: Any) -> bool:
    """Whether a metric is absent: ``None`` (JSON ``null``) or ``NaN`` (how `read_results` returns it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _headline(records: Iterable[Mapping[str, Any]], model: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in records
        if r["model"] == model
        and r["protocol"] == HEADLINE_PROTOCOL
        and r["split"] == BENCHMARK_SPLIT
        and not is_missing(r["accuracy"])
    ]


def eval_result_entries(
    records: Iterable[Mapping[str, Any]],
    dataset_id: str,
    *,
    model: str = "CLIP_ND",
    dataset_revision: str | None = None,
    source_url: str | None = None,
    source_name: str | None = None,
) -> list[Any]:
    """One `huggingface_hub.EvalResultEntry` per headline record of `model`: candidate-list accuracy, test split.

    Records of other protocols or splits, and cells with nothing evaluated, have no benchmark task and
    are left out.
    """
    from huggingface_hub import EvalResultEntry

    entries = []
    for record in _headline(records, model):
        notes = (
            f"protocol: {HEADLINE_PROTOCOL} (candidate list); ties: {record.get('ties', 'expected')}; "
            f"evaluated {record['evaluated']}, excluded {record['excluded']} (lacking the task's modalities)"
        )
        entries.append(
            EvalResultEntry(
                dataset_id=dataset_id,
                task_id=task_id(record["topic"], record["task"]),
                value=float(record["accuracy"]),
                dataset_revision=dataset_revision,
                source_url=source_url,
                source_name=source_name if source_url else None,
                notes=notes,
            )
        )
    return entries


def eval_results_files(
    records: Iterable[Mapping[str, Any]], dataset_id: str, *, model: str = "CLIP_ND", **entry_kwargs: Any
) -> dict[str, str]:
    """The ``.eval_results/`` files of `model`: ``{file name: YAML text}``, one file per benchmark dataset. Pure.

    `entry_kwargs` go to [`eval_result_entries`] (``dataset_revision``, ``source_url``, ``source_name``).
    Returns an empty dict when `model` has no headline record.
    """
    from huggingface_hub import eval_result_entries_to_yaml

    entries = eval_result_entries(records, dataset_id, model=model, **entry_kwargs)
    if not entries:
        return {}
    name = dataset_id.rstrip("/").split("/")[-1] or "m3el"
    text = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False, allow_unicode=True)
    return {f"{name}.yaml": text}


def write_eval_results(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    dataset_id: str,
    model_name: str,
    **entry_kwargs: Any,
) -> list[Path]:
    """Write `model_name`'s leaderboard entries to ``out_dir/.eval_results/``, ready for ``m3el-hf push-model``.

    Works for any model scored by ``m3el-hf evaluate``: push the folder to that model's repo with
    ``m3el-hf push-model OUT_DIR --repo OWNER/MODEL --create-pr``.

    Returns:
        `list[Path]`: The files written (none when `model_name` has no headline record).
    """
    files = eval_results_files(records, dataset_id, model=model_name, **entry_kwargs)
    if not files:
        logger.warning(
            "No %s accuracy record of %r on the %s split: nothing written.",
            HEADLINE_PROTOCOL,
            model_name,
            BENCHMARK_SPLIT,
        )
    folder = Path(out_dir) / EVAL_RESULTS_DIR
    return [
        atomic_write(folder / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        for name, text in files.items()
    ]
