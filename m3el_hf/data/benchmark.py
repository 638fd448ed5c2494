"""M³EL as a Hub benchmark run by MTEB: its task ids, the scored split and protocols, and the dataset's ``eval.yaml``.

The Hub accepts a benchmark whose ``evaluation_framework`` is on its list (huggingface.js ``eval.ts``); M³EL's
is ``mteb``. The tasks are the MTEB tasks of `m3el_hf.evaluation.mteb_tasks` (``M3ELT2TCandidates``, ...),
and their ids are formed as MTEB's own writer forms them: ``{task}_{topic}_{split}`` per topic (the dataset
config ``{topic}``) and ``{task}`` alone for the overall score, the mean over the five topics.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from ..tasks import TASK_NAMES, get_task

__all__ = [
    "BENCHMARK_PROTOCOLS",
    "BENCHMARK_SPLIT",
    "EVALUATION_FRAMEWORK",
    "HEADLINE_PROTOCOL",
    "LEAK_FREE_PROTOCOL",
    "benchmark_tasks",
    "eval_yaml",
    "mteb_task_name",
    "task_id",
]


BENCHMARK_SPLIT = "test"


HEADLINE_PROTOCOL = "candidates"


LEAK_FREE_PROTOCOL = "candidates-leak-free"
"""The headline protocol without the instances whose mention image copies the gold's (`m3el_hf.data.leak`)."""


BENCHMARK_PROTOCOLS: tuple[str, ...] = ("candidates", "kb", "candidates-leak-free", "kb-leak-free")
"""The protocols with benchmark tasks: candidate lists, the whole knowledge base, and their leak-free twins."""


EVALUATION_FRAMEWORK = "mteb"


_ALL_TOPICS = "all"  # the overall topic of the results records (evaluation.ALL_TOPICS)
_LEAK_FREE_SUFFIX = "-leak-free"


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
    if protocol not in BENCHMARK_PROTOCOLS:
        raise ValueError(f"No benchmark task for protocol {protocol!r}; the protocols are {BENCHMARK_PROTOCOLS}.")
    spec = get_task(task)
    leak_free = protocol.endswith(_LEAK_FREE_SUFFIX)
    if leak_free and not spec.mention_needs_image:
        return None
    base = protocol.removesuffix(_LEAK_FREE_SUFFIX).capitalize()
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
    return name if topic == _ALL_TOPICS else f"{name}_{topic}_{split}"


def benchmark_tasks(topics: Sequence[str]) -> list[dict[str, str]]:
    """The ``tasks`` of ``eval.yaml``: per MTEB task, its overall id, then one id per topic (config and split)."""
    tasks = []
    for protocol in BENCHMARK_PROTOCOLS:
        for task in TASK_NAMES:
            if mteb_task_name(task, protocol) is None:
                continue
            tasks.append({"id": task_id(_ALL_TOPICS, task, protocol)})
            tasks += [
                {"id": task_id(topic, task, protocol), "config": topic, "split": BENCHMARK_SPLIT}
                for topic in topics
                if topic != _ALL_TOPICS
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
