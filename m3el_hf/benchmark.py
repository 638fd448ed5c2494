"""M³EL as a benchmark: its protocols, the overall topic, the scored split, the MTEB task ids, the dataset's
``eval.yaml`` and a model's ``.eval_results`` entries. Every other module takes these names from here.

Protocols: ``candidates`` (M³EL's: each mention ranks its own candidate list, the headline), ``kb`` (each mention
ranks its topic's whole knowledge base) and their ``-leak-free`` twins (the tasks with a mention image, without the
instances whose mention image copies the gold's, `m3el_hf.data.leak`).

The Hub accepts a benchmark whose ``evaluation_framework`` is on its list (huggingface.js ``eval.ts``); M³EL's
is ``mteb``. The tasks are the MTEB tasks of `m3el_hf.evaluation.mteb_tasks` (``M3ELT2TCandidates``, ...),
and their ids are formed as MTEB's own writer forms them: ``{task}_{topic}_{split}`` per topic (the dataset
config ``{topic}``) and ``{task}`` alone for the overall score, the mean over the five topics. The Hub's
leaderboards (hub-docs ``eval-results.md``) join that ``eval.yaml`` with a model repo's ``.eval_results/*.yaml``,
whose entries point at ``{dataset id, task_id}`` with one value; [`task_id`] forms the ids of both sides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from .atomic import atomic_write
from .provenance import Provenance, check_publishable
from .tasks import TASK_NAMES, TOPICS, get_task

__all__ = [
    "ALL_TOPICS",
    "BENCHMARK_SPLIT",
    "EVALUATION_FRAMEWORK",
    "EVAL_RESULTS_DIR",
    "HEADLINE_PROTOCOL",
    "LEAK_FREE_SUFFIX",
    "PROTOCOLS",
    "Protocol",
    "benchmark_tasks",
    "eval_result_entries",
    "eval_results_files",
    "eval_yaml",
    "is_leak",
    "is_leak_free",
    "mteb_task_name",
    "protocol_name",
    "ranks_the_kb",
    "task_id",
    "write_eval_results",
]

logger = logging.getLogger(__name__)

Protocol = Literal["candidates", "kb", "candidates-leak-free", "kb-leak-free"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
"""Every protocol; each has benchmark tasks: candidate lists, the whole knowledge base, and their leak-free twins."""


HEADLINE_PROTOCOL = "candidates"


LEAK_FREE_SUFFIX = "-leak-free"


ALL_TOPICS = "all"
"""The `topic` of the records over every topic: each metric is the mean over the topics with an evaluated
instance (MTEB's mean over subsets, so both harnesses report one overall score); counts are summed."""


BENCHMARK_SPLIT = "test"


EVALUATION_FRAMEWORK = "mteb"


EVAL_RESULTS_DIR = ".eval_results"


def ranks_the_kb(protocol: str) -> bool:
    """Whether `protocol` ranks each topic's whole knowledge base (``kb``, ``kb-leak-free``)."""
    return protocol.removesuffix(LEAK_FREE_SUFFIX) == "kb"


def is_leak(kind: str | None) -> bool:
    """Whether a ``mention_image_leak`` value makes the instance leaked (a copy or a near-duplicate)."""
    return kind in ("copy", "near")


def is_leak_free(protocol: str) -> bool:
    """Whether `protocol` leaves the leaked instances out (``candidates-leak-free``, ``kb-leak-free``)."""
    return protocol.endswith(LEAK_FREE_SUFFIX)


def protocol_name(ranks_kb: bool, leak_free: bool) -> str:
    """The protocol that ranks the whole KB or the candidate list, with or without the leaked instances.

    >>> protocol_name(ranks_kb=True, leak_free=True)
    'kb-leak-free'
    """
    return ("kb" if ranks_kb else "candidates") + (LEAK_FREE_SUFFIX if leak_free else "")


_DESCRIPTION = (
    "M³EL (arXiv 2410.18096): multi-modal entity linking over five topics (movies, common, person, books, "
    "sports), run with MTEB (pip install 'm3el-hf[mteb]'). Nine tasks pair a mention modality with an entity "
    "modality in {T, I, TI}. `M3EL{m}2{e}Candidates`: each mention ranks its own candidate list (M³EL's "
    "protocol); `M3EL{m}2{e}Kb`: it ranks every entity of its topic's knowledge base; `...LeakFree` (tasks with a "
    "mention image): the same without the instances whose mention image is a copy or near-duplicate of the "
    "gold's (column `mention_image_leak`; the release stores a mention's image as the gold's file). Test split. An "
    "instance lacking the task's mention modality, or whose gold lacks the entity modality, is left out and "
    "counted. Score: accuracy (Hits@1), ties counted at their expected value under uniform random tie-breaking "
    "(scores within 8 float32 ulps are tied). `{task}_{topic}_test` scores one topic; `{task}` is the mean over "
    "the five topics, each topic weighing the same."
)


def mteb_task_name(task: str, protocol: str) -> str | None:
    """The MTEB task of M³EL `task` under `protocol`; None for a leak-free protocol of a task without a mention
    image (it has no leak to leave out).

    >>> mteb_task_name("TI-T", "candidates"), mteb_task_name("I-I", "kb-leak-free")
    ('M3ELTI2TCandidates', 'M3ELI2IKbLeakFree')
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"No benchmark task for protocol {protocol!r}; the protocols are {PROTOCOLS}.")
    spec = get_task(task)
    leak_free = is_leak_free(protocol)
    if leak_free and not spec.mention_needs_image:
        return None
    base = protocol.removesuffix(LEAK_FREE_SUFFIX).capitalize()
    return f"M3EL{spec.mention}2{spec.entity}{base}{'LeakFree' if leak_free else ''}"


def task_id(topic: str, task: str, protocol: str = HEADLINE_PROTOCOL, split: str = BENCHMARK_SPLIT) -> str:
    """The benchmark task id of `task` on `topic` (``"all"``: the overall score) under `protocol`, as MTEB forms it.

    >>> task_id("movies", "T-TI")
    'M3ELT2TICandidates_movies_test'
    >>> task_id("all", "I-I", "candidates-leak-free")
    'M3ELI2ICandidatesLeakFree'
    """
    name = mteb_task_name(task, protocol)
    if name is None:
        raise ValueError(f"Task {task} has no mention image, so no {protocol} benchmark task.")
    return name if topic == ALL_TOPICS else f"{name}_{topic}_{split}"


def benchmark_tasks(topics: Sequence[str]) -> list[dict[str, str]]:
    """The ``tasks`` of ``eval.yaml``: per MTEB task, its overall id, then one id per topic (config and split)."""
    tasks = []
    for protocol in PROTOCOLS:
        for task in TASK_NAMES:
            if mteb_task_name(task, protocol) is None:
                continue
            tasks.append({"id": task_id(ALL_TOPICS, task, protocol)})
            tasks += [
                {"id": task_id(topic, task, protocol), "config": topic, "split": BENCHMARK_SPLIT}
                for topic in topics
                if topic != ALL_TOPICS
            ]
    return tasks


def eval_yaml(topics: Sequence[str], *, dataset_name: str = "M³EL", description: str = _DESCRIPTION) -> str:
    """Render the ``eval.yaml`` that registers a prepared M³EL dataset repo as a Hub benchmark run by MTEB. Pure.

    Args:
        topics (`Sequence[str]`): The prepared topics; each gets one task id per MTEB task.
        dataset_name (`str`, *optional*, defaults to `"M³EL"`): The benchmark's display name.
        description (`str`, *optional*):
            Shown on the benchmark page; the default states the protocols, the exclusions, the tie rule and how
            the overall score averages the topics.
    """
    payload = {
        "name": dataset_name,
        "description": description,
        "evaluation_framework": EVALUATION_FRAMEWORK,
        "tasks": benchmark_tasks(topics),
    }
    return yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=100)


def _benchmark_records(records: Iterable[Mapping[str, Any]], model: str) -> list[Mapping[str, Any]]:
    """`model`'s scored test records of the benchmark tasks; an overall record only when every topic was scored,
    as MTEB writes an overall score only for a task run on all its subsets."""
    records = [
        r
        for r in records
        if r["model"] == model
        and r["protocol"] in PROTOCOLS
        and r["split"] == BENCHMARK_SPLIT
        and r["evaluated"]
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
    provenance: Provenance | None,
    model: str = "CLIP_ND",
    unofficial: bool = False,
    source_url: str | None = None,
    source_name: str | None = None,
) -> list[Any]:
    """One `huggingface_hub.EvalResultEntry` per benchmark record of `model`: its accuracy in percent (rounded to
    5 decimals, as MTEB writes it) on the test split, under the MTEB task id of its protocol and topic.

    Records of other splits, and cells with nothing evaluated, have no benchmark task and are left out; so is
    the overall score of a task not scored on all five topics. Each entry's ``notes`` give the `provenance`
    (harness, versions, data and its revision); a Hub commit is also its ``dataset_revision``. Scores that are not
    `dataset_id`'s (`check_publishable`) raise a `ValueError`, unless `unofficial`: then the notes say why.
    """
    from huggingface_hub import EvalResultEntry

    reason = check_publishable(provenance, dataset_id, unofficial)
    said = "" if provenance is None else f"; {provenance.note()}"
    said += f"; unofficial: {reason}" if reason else ""
    revision = None if provenance is None or provenance.local else provenance.dataset_revision
    entries = []
    for record in _benchmark_records(records, model):
        leak = f", leaked {record['leaked']} (left out)" if is_leak_free(record["protocol"]) else ""
        notes = (
            f"protocol: {record['protocol']}; ties: {record.get('ties', 'expected')}; evaluated "
            f"{record['evaluated']}, excluded {record['excluded']} (lacking the task's modalities){leak}{said}"
        )
        entries.append(
            EvalResultEntry(
                dataset_id=dataset_id,
                task_id=task_id(record["topic"], record["task"], record["protocol"]),
                value=round(100 * float(record["accuracy"]), 5),
                dataset_revision=revision,
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

    `entry_kwargs` go to [`eval_result_entries`] (``provenance``, ``unofficial``, ``source_url``, ``source_name``).
    Returns an empty dict when `model` has no benchmark record.
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
        `list[Path]`: The files written (none when `model_name` has no benchmark record).
    """
    files = eval_results_files(records, dataset_id, model=model_name, **entry_kwargs)
    if not files:
        logger.warning(
            "No benchmark record (%s) of %r on the %s split: nothing written.",
            ", ".join(PROTOCOLS),
            model_name,
            BENCHMARK_SPLIT,
        )
    folder = Path(out_dir) / EVAL_RESULTS_DIR
    return [
        atomic_write(folder / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        for name, text in files.items()
    ]
