"""M³EL as a Hub benchmark: the task ids, the dataset's ``eval.yaml`` and the models' ``.eval_results/*.yaml``.

The Hub's leaderboards (hub-docs ``eval-results.md``) join two files: a benchmark dataset's
``eval.yaml`` declares tasks ``{id, config, split}``, and a model repo's ``.eval_results/*.yaml``
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
from ..data.benchmark import BENCHMARK_SPLIT, HEADLINE_PROTOCOL, LEAK_FREE_PROTOCOL, task_id
from ..evaluation.results import is_missing

__all__ = [
    "EVAL_RESULTS_DIR",
    "eval_result_entries",
    "eval_results_files",
    "write_eval_results",
]

logger = logging.getLogger(__name__)

EVAL_RESULTS_DIR = ".eval_results"


def _headline(records: Iterable[Mapping[str, Any]], model: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in records
        if r["model"] == model
        and r["protocol"] in (HEADLINE_PROTOCOL, LEAK_FREE_PROTOCOL)
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
    """One `huggingface_hub.EvalResultEntry` per benchmark record of `model`: candidate-list accuracy on the test
    split, the headline protocol and its leak-free twin.

    Records of other protocols or splits, and cells with nothing evaluated, have no benchmark task and
    are left out.
    """
    from huggingface_hub import EvalResultEntry

    entries = []
    for record in _headline(records, model):
        leak = f", leaked {record['leaked']} (left out)" if record["protocol"] == LEAK_FREE_PROTOCOL else ""
        notes = (
            f"protocol: {record['protocol']} (candidate list); ties: {record.get('ties', 'expected')}; "
            f"evaluated {record['evaluated']}, excluded {record['excluded']} (lacking the task's modalities){leak}"
        )
        entries.append(
            EvalResultEntry(
                dataset_id=dataset_id,
                task_id=task_id(record["topic"], record["task"], record["protocol"]),
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
