"""M³EL as a Hub benchmark: the task ids, the dataset's ``eval.yaml`` and the models' ``.eval_results/*.yaml``.

The Hub's leaderboards (hub-docs ``eval-results.md``) join two files: a benchmark dataset's
``eval.yaml`` declares tasks (``id``, with the ``config`` and ``split`` they score, none for an overall score), and
a model repo's ``.eval_results/*.yaml``
entries point at ``{dataset id, task_id}`` with one value. [`task_id`] is the only place the id
scheme is defined, so both sides always agree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write
from ..data.benchmark import BENCHMARK_PROTOCOLS, BENCHMARK_SPLIT, EVALUATION_FRAMEWORK, mteb_task_name, task_id
from ..evaluation.results import ALL_TOPICS, is_missing
from ..tasks import TOPICS

__all__ = [
    "EVAL_RESULTS_DIR",
    "eval_result_entries",
    "eval_results_files",
    "write_eval_results",
]

logger = logging.getLogger(__name__)

EVAL_RESULTS_DIR = ".eval_results"


def _benchmark_records(records: Iterable[Mapping[str, Any]], model: str) -> list[Mapping[str, Any]]:
    """`model`'s scored test records of the benchmark tasks; an overall record only when every topic was scored,
    as MTEB writes an overall score only for a task run on all its subsets."""
    records = [
        r
        for r in records
        if r["model"] == model
        and r["protocol"] in BENCHMARK_PROTOCOLS
        and r["split"] == BENCHMARK_SPLIT
        and not is_missing(r["accuracy"])
        and mteb_task_name(r["task"], r["protocol"]) is not None
    ]
    topics: dict[tuple[str, str], set[str]] = {}
    for r in records:
        topics.setdefault((r["protocol"], r["task"]), set()).add(r["topic"])
    return [r for r in records if r["topic"] != ALL_TOPICS or set(TOPICS) <= topics[r["protocol"], r["task"]]]


def eval_result_entries(
    records: Iterable[Mapping[str, Any]],
    dataset_id: str,
    *,
    model: str = "CLIP_ND",
    dataset_revision: str | None = None,
    source_url: str | None = None,
    source_name: str | None = None,
) -> list[Any]:
    """One `huggingface_hub.EvalResultEntry` per benchmark record of `model`: its accuracy in percent (rounded to
    5 decimals, as MTEB writes it) on the test split, under the MTEB task id of its protocol and topic.

    Records of other splits, and cells with nothing evaluated, have no benchmark task and are left out; so is
    the overall score of a task not scored on all five topics.
    """
    from huggingface_hub import EvalResultEntry

    entries = []
    for record in _benchmark_records(records, model):
        leak = f", leaked {record['leaked']} (left out)" if record["protocol"].endswith("-leak-free") else ""
        notes = (
            f"protocol: {record['protocol']}; ties: {record.get('ties', 'expected')}; evaluated "
            f"{record['evaluated']}, excluded {record['excluded']} (lacking the task's modalities){leak}"
        )
        entries.append(
            EvalResultEntry(
                dataset_id=dataset_id,
                task_id=task_id(record["topic"], record["task"], record["protocol"]),
                value=round(100 * float(record["accuracy"]), 5),
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
    Returns an empty dict when `model` has no benchmark record.
    """
    from huggingface_hub import eval_result_entries_to_yaml

    entries = eval_result_entries(records, dataset_id, model=model, **entry_kwargs)
    if not entries:
        return {}
    name = dataset_id.rstrip("/").split("/")[-1] or "m3el"
    payload = [
        {**entry, "evaluation_framework": EVALUATION_FRAMEWORK} for entry in eval_result_entries_to_yaml(entries)
    ]
    text = yaml.safe_dump(payload, sort_keys=False, allow_unicode=True)
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
        `list[Path]`: The files written (none when `model_name` has no benchmark record).
    """
    files = eval_results_files(records, dataset_id, model=model_name, **entry_kwargs)
    if not files:
        logger.warning(
            "No benchmark record (%s) of %r on the %s split: nothing written.",
            ", ".join(BENCHMARK_PROTOCOLS),
            model_name,
            BENCHMARK_SPLIT,
        )
    folder = Path(out_dir) / EVAL_RESULTS_DIR
    return [
        atomic_write(folder / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        for name, text in files.items()
    ]
