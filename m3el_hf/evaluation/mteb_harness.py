"""``m3el-hf evaluate --harness mteb``: the evaluation run by MTEB, reported as the built-in harness reports it.

MTEB runs the M³EL tasks (`m3el_hf.evaluation.mteb_tasks`) on any model it can load; a checkpoint folder, or a
Hub id MTEB does not know, is loaded as CLIP_ND (`m3el_hf.evaluation.mteb_model`). Its scores become records in
`evaluate_model`'s format and order, so results.json, tables, plot, cards and ``.eval_results`` are written the
same way. For CLIP_ND the numbers are `evaluate_model`'s, except where the tasks document a limit: scores within
8 float32 ulps count as tied, where the built-in evaluator ties equal scores only, and a ``Kb`` gold ranked below
MTEB's depth of 1,000 adds 0 to the MRR. MTEB's own result files are kept too, for its results repository.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import mteb_task_name, protocol_name
from ..modeling.configuration_clipnd import CLIPNDConfig
from .entity_text import FULL
from .results import METRIC_KEYS, RECORD_KEYS, EvaluationResult, add_overall, topic_seen

__all__ = ["build_mteb_tasks", "evaluate_with_mteb", "load_mteb_model", "records_from_mteb"]

logger = logging.getLogger(__name__)

_SCORE_KEYS = {
    "accuracy": "expected_accuracy",
    "hits@1": "expected_hits_at_1",
    "hits@3": "expected_hits_at_3",
    "hits@5": "expected_hits_at_5",
    "mrr": "expected_mrr",
    "mr": "expected_mean_rank",
}


def build_mteb_tasks(
    data: str | dict[str, str],
    topics: Sequence[str],
    tasks: Sequence[str],
    protocols: Sequence[str],
    split: str = "test",
) -> list[Any]:
    """The MTEB task objects for `tasks` × `protocols` on `data` (a prepared folder, a Hub id, or ``{"path",
    "revision"}``), limited to `topics` and `split`; their query texts use CLIP_ND's default mention template, for
    the models with no template of their own (a CLIP_ND encoder uses its checkpoint's)."""
    from .mteb_tasks import TASKS

    by_name = {cls.metadata.name: cls for cls in TASKS}
    names = [mteb_task_name(task, protocol) for protocol in protocols for task in tasks]
    built = [by_name[name](dataset=data, mention_template=CLIPNDConfig.mention_template) for name in names if name]
    return [task.filter_languages(None, hf_subsets=list(topics)).filter_eval_splits([split]) for task in built]


def load_mteb_model(model: str, device: str | None = None, label: str | None = None) -> Any:
    """The MTEB model for `model`: MTEB's own wrapper for a model in its registry, else CLIP_ND's encoder (a local
    checkpoint named ``local/{label}`` in MTEB's results). MTEB's image-model wrappers need torchvision, checked
    here, before its tasks load: MTEB's own check ends in a multi-line ImportError."""
    import mteb

    from .mteb_model import CLIPNDEncoder

    if not Path(model).is_dir():
        try:
            meta = mteb.get_model_meta(model)
        except (KeyError, ValueError):
            meta = None
        if meta is not None and meta.loader is not None and meta.loader is not CLIPNDEncoder:
            if "image" in meta.modalities and importlib.util.find_spec("torchvision") is None:
                raise ValueError(
                    f"{model}: MTEB's wrapper for image models needs torchvision: pip install the torchvision built "
                    "for your torch (a CPU-only torch: --index-url https://download.pytorch.org/whl/cpu)."
                )
            logger.info("%s: MTEB's own wrapper (%s)", model, meta.loader.__name__)
            return mteb.get_model(model, device=device)
    return CLIPNDEncoder(model, device=device, label=label)


def evaluate_with_mteb(
    model: str,
    data: str | dict[str, str],
    *,
    topics: Sequence[str],
    tasks: Sequence[str],
    protocols: Sequence[str],
    model_name: str = "model",
    split: str = "test",
    batch_size: int = 64,
    results_folder: str | Path | None = None,
    device: str | None = None,
    trained_topics: Sequence[str] | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate `model` (a checkpoint folder, or any model id MTEB can load) on `data` through ``mteb.evaluate``.

    Args:
        model, data: The model, and the prepared M³EL folder, Hub id or ``{"path", "revision"}``.
        topics, tasks, protocols, split: What to evaluate, as in `evaluate_model`.
        model_name (`str`, *optional*): The `model` label of the records.
        batch_size (`int`, *optional*, defaults to 64): MTEB's encode batch size.
        results_folder (`str` or `Path`, *optional*): Where MTEB writes its own result files; none if not given.
        device (`str`, *optional*): Torch device of the model.
        trained_topics (`Sequence[str]`, *optional*): The topics the model was trained on, as in `evaluate_model`.
        progress (`bool`, *optional*, defaults to `True`): MTEB's progress bars.

    Returns:
        [`EvaluationResult`], with ties ``"expected"`` (the tasks' main score).
    """
    import mteb

    encoder = load_mteb_model(model, device=device, label=model_name)
    task_objects = build_mteb_tasks(data, topics, tasks, protocols, split)
    cache = mteb.ResultCache(cache_path=str(results_folder)) if results_folder is not None else None
    result = mteb.evaluate(
        encoder,
        task_objects,
        cache=cache,
        overwrite_strategy="always",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": progress},
        show_progress_bar=progress,
    )
    header = {"model": model_name, "checkpoint": str(model), "split": split, "ties": "expected", "entity_text": FULL}
    records = records_from_mteb(result.task_results, task_objects, header, topics, trained_topics)
    return EvaluationResult(add_overall(records))


def records_from_mteb(
    task_results: Sequence[Any],
    task_objects: Sequence[Any],
    header: dict[str, str],
    topics: Sequence[str],
    trained_topics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One record per MTEB task result × topic, in `evaluate_model`'s format and order (topics as in `topics`),
    without the overall records."""
    specs = {task.metadata.name: task for task in task_objects}
    records = []
    for task_result in task_results:
        task = specs[task_result.task_name]
        protocol = protocol_name(task.ranks_kb, task.leak_free)
        by_topic = sorted(
            task_result.scores[header["split"]], key=lambda scores: list(topics).index(scores["hf_subset"])
        )
        for scores in by_topic:
            topic = scores["hf_subset"]
            record = {**header, "protocol": protocol, "topic": topic, "seen": topic_seen(topic, trained_topics)}
            record["task"] = f"{task.mention}-{task.entity}"
            record.update({key: float(scores[_SCORE_KEYS[key]]) for key in METRIC_KEYS})
            record.update({key: int(scores[key]) for key in ("evaluated", "excluded", "leaked")})
            records.append({key: record[key] for key in RECORD_KEYS})
    return records
