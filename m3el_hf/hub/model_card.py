"""The CLIP_ND model card: recipe, results per task × topic next to the baselines, and machine-readable scores.

Scores are published twice: ``model-index`` in the card's YAML (`EvalResult`, read by the Hub's
model page and by tools that predate eval.yaml) and ``.eval_results/*.yaml`` (see
[`m3el_hf.benchmark`]), which feed the M³EL benchmark's leaderboard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..benchmark import ALL_TOPICS, BENCHMARK_SPLIT, HEADLINE_PROTOCOL
from ..data.dataset_card import CITATION
from ..evaluation.results import METRIC_KEYS, is_missing, percent, show_metric, unique
from ..json_files import read_json
from ..modeling.configuration_clipnd import settings_of
from ..modeling.templates import TextTemplates
from ..tasks import TOPICS
from ..training.config import SUMMARY_NAME
from ..version import __version__

__all__ = [
    "HUB_TASK_TYPES",
    "MODEL_NAME",
    "PLOT_NAME",
    "base_model_of",
    "build_model_card",
    "hub_task_type",
    "model_index_results",
    "read_summary",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "CLIP_ND"
"""The `model` of our own records in a results file; the others are baselines."""
PLOT_NAME = "accuracy.png"

# The Hub has no multi-modal entity linking task; each M³EL task gets the Hub task whose inputs and outputs are
# closest to its modalities: a text query ranking texts, an image (with or without text) classified against
# entity names, an image matched to images, and a query ranking image or image+text entries.
HUB_TASK_TYPES = {
    "T": "text-ranking",
    "I": "zero-shot-image-classification",
    "II": "image-feature-extraction",
    "retrieval": "visual-document-retrieval",
}
_PROTOCOL_NAMES = {
    "candidates": "candidate-list protocol",
    "kb": "whole-KB protocol",
    "candidates-leak-free": "candidate-list protocol, leak-free",
    "kb-leak-free": "whole-KB protocol, leak-free",
}
_PROTOCOL_TITLES = {
    "candidates": "candidate list (rank the instance's own candidates; M³EL's protocol)",
    "kb": "whole knowledge base (rank every entity of the topic's KB)",
    "candidates-leak-free": (
        "candidate list, leak-free (tasks with a mention image, without the instances whose mention image is a copy "
        "or near-duplicate of the gold's)"
    ),
    "kb-leak-free": "whole knowledge base, leak-free (without the instances whose mention image copies the gold's)",
}
_SUMMARY_KEYS = ("topics", "tasks", "augment_description", "hard_negatives", "seed", "max_steps", "epochs")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-export the checkpoint.") from None


def _show(value: Any) -> str:
    """A summary value for the card: lists and mappings joined."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_show(v)}" for k, v in value.items())
    return str(value)


def read_summary(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``training_summary.json`` (written by `train`, `m3el_hf.json_files`); {} when it has none."""
    path = Path(checkpoint_dir) / SUMMARY_NAME
    return read_json(path) if path.is_file() else {}


def _training_text(summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The recipe: the entity-linking settings (`config`) and the training summary's options and figures."""
    settings = summary.get("config", {})
    lines = [
        "Contrastive (symmetric InfoNCE) fine-tuning of mentions against entities, entity text = "
        + ("name + description." if config.get("augment_description", True) else "name only."),
        f"Fusion of text and image embeddings for TI rows: `{config.get('fusion', 'mean')}`; hard negatives: "
        f"{'on' if config.get('hard_negatives') else 'off'}.",
    ]
    if not settings:
        lines.append(f"No `{SUMMARY_NAME}` was exported with this checkpoint: topics, tasks and seed are unknown.")
        return "\n".join(f"- {line}" for line in lines)
    topics = settings.get("topics")
    if topics and set(topics) <= set(TOPICS):
        unseen = [topic for topic in TOPICS if topic not in topics]
        lines.append(
            f"Trained on the topics {_show(topics)}"
            + (f"; unseen in training: {_show(unseen)}." if unseen else " (all of M³EL's).")
        )
    elif topics:  # another dataset's own topic, such as a `prepare --format mimic` one
        lines.append(f"Trained on the topic{'s' if len(topics) > 1 else ''} {_show(topics)} (not M³EL's).")
    rows = [(key, settings[key]) for key in _SUMMARY_KEYS if key in settings]
    if "data" in settings:
        rows.insert(0, ("data", settings["data"]))
    done = {"steps": "steps run", "epochs": "epochs run", "hardware": "hardware", "wall_time_s": "wall time (s)"}
    rows += [(label, summary[key]) for key, label in done.items() if key in summary]
    rows += [
        (key, value)
        for key, value in settings.items()
        if key not in dict(rows)
        and key not in ("model", "output_dir", "resume_from")
        and "token" not in key
        and isinstance(value, str | int | float | bool | list)
    ]
    table = ["| setting | value |", "|---|---|", *(f"| {key} | {_show(value)} |" for key, value in rows)]
    return "\n".join(f"- {line}" for line in lines) + "\n\n" + "\n".join(table)


def _task_topic_table(records: Sequence[Mapping[str, Any]]) -> str:
    topics = unique(r["topic"] for r in records)
    cells = {(r["task"], r["topic"]): r["accuracy"] for r in records}
    rows = [f"| task | {' | '.join(topics)} |", "|---" * (len(topics) + 1) + "|"]
    for task in unique(r["task"] for r in records):
        rows.append(f"| {task} | " + " | ".join(percent(cells.get((task, t))) for t in topics) + " |")
    return "\n".join(rows)


def _baselines_table(records: Sequence[Mapping[str, Any]], topic: str) -> str:
    models = unique(r["model"] for r in records)
    cells = {(r["task"], r["model"]): r["accuracy"] for r in records if r["topic"] == topic}
    rows = [f"| task | {' | '.join(models)} |", "|---" * (len(models) + 1) + "|"]
    for task in unique(r["task"] for r in records):
        rows.append(f"| {task} | " + " | ".join(percent(cells.get((task, m))) for m in models) + " |")
    return "\n".join(rows)


def _details_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Every metric of `records`: MR (the mean rank) where they hold one, results from before it had none."""
    keys = [k for k in METRIC_KEYS if k != "mr" or any(not is_missing(r.get(k)) for r in records)]
    rows = [
        "| topic | task | " + " | ".join(keys) + " | evaluated | excluded | leaked |",
        "|---" * (len(keys) + 5) + "|",
    ]
    for r in records:
        values = " | ".join(show_metric(r.get(k), k) for k in keys)
        rows.append(f"| {r['topic']} | {r['task']} | {values} | {r['evaluated']} | {r['excluded']} | {r['leaked']} |")
    unit = "In %; mr is the gold's mean rank (1 is best, lower is better)." if "mr" in keys else "In %."
    return "\n".join(rows) + f"\n\n{unit}"


def _results_text(records: Sequence[Mapping[str, Any]], model: str, plot: bool) -> str:
    ours = [r for r in records if r["model"] == model]
    if not ours:
        return "No evaluation results were given for this checkpoint (`m3el-hf push-model --results results.json`)."
    models = unique(r["model"] for r in records)
    dataset = _dataset_name(records)
    mteb = (
        "Every protocol is an MTEB task of the M³EL benchmark (`M3EL{m}2{e}Candidates`, `...Kb`, `...LeakFree`). "
        if dataset == "M³EL"
        else f"Scored on {dataset}, not M³EL: M³EL's MTEB tasks do not cover it. "
    )
    parts = [
        f"Accuracy (%) on the **{BENCHMARK_SPLIT}** split, evaluated with `m3el-hf evaluate`; ties between "
        "candidate scores count as their expected value, and `all` is the mean over the topics (each weighing the "
        f"same, as MTEB averages subsets). {mteb}"
        + (
            f"Baselines from the same evaluation: {', '.join(m for m in models if m != model)}."
            if len(models) > 1
            else ""
        )
    ]
    if plot:
        parts.append(f"![Accuracy per task and topic ({HEADLINE_PROTOCOL} protocol)]({PLOT_NAME})")
    for protocol in unique(r["protocol"] for r in ours):
        title = _PROTOCOL_TITLES.get(protocol, protocol)
        mine = [r for r in ours if r["protocol"] == protocol]
        same = [r for r in records if r["protocol"] == protocol]
        topic = ALL_TOPICS if any(r["topic"] == ALL_TOPICS for r in same) else mine[0]["topic"]
        parts += [
            f"### {model}, protocol: {title}",
            _task_topic_table(mine),
            f"#### Side by side, protocol: {title}, topic `{topic}`",
            _baselines_table(same, topic),
            f"<details><summary>All metrics, {model}, protocol: {protocol}</summary>\n\n{_details_table(mine)}"
            "\n\n</details>",
        ]
    return "\n\n".join(parts)


def _limitations_text(synthetic: bool) -> str:
    lines = []
    if synthetic:
        lines.append(
            "**These scores come from a synthetic release** (`m3el-hf synth`): they check the pipeline and say "
            "nothing about performance on the real M³EL data."
        )
    else:
        lines.append(
            "Scores on data other than the official M³EL release (e.g. the synthetic release of `m3el-hf synth`) "
            "check the pipeline only; compare numbers only when the data and split are the same."
        )
    lines += [
        "**I-I is inflated by the data:** in M³EL, some mention images are byte-identical to the gold entity's "
        "image (the dataset card's audit gives the share), so image-to-image matching is partly trivial.",
        "**Protocols are not comparable:** accuracy over the instance's candidate list (M³EL's protocol) "
        "is far easier than ranking the whole knowledge base; every table above names its protocol. "
        "Instances lacking a modality a task needs are excluded from that task (see `excluded`).",
        "Entity text relies on Wikidata descriptions; entities without one fall back to their name.",
    ]
    return "\n".join(f"- {line}" for line in lines)


def hub_task_type(task: str) -> str:
    """The Hub task id (``model-index`` ``task.type``) closest to an M³EL task; see `HUB_TASK_TYPES`.

    >>> hub_task_type("I-T"), hub_task_type("TI-TI")
    ('zero-shot-image-classification', 'visual-document-retrieval')
    """
    mention, entity = task.split("-")
    if entity == "T":
        return HUB_TASK_TYPES["T" if mention == "T" else "I"]
    return HUB_TASK_TYPES["II" if mention == "I" and entity == "I" else "retrieval"]


def model_index_results(
    records: Sequence[Mapping[str, Any]], dataset_id: str, *, model: str = MODEL_NAME, dataset_name: str = "M³EL"
) -> list[EvalResult]:
    """One `EvalResult` (accuracy) per record of `model` with a value, for the card's ``model-index``. Pure.

    The task type follows the task's modalities (`hub_task_type`); the protocol is named in the free-text
    task and metric names, the dataset config is the one holding the task's columns (``{topic}-{task}``).
    """
    results = []
    for r in records:
        if r["model"] != model or is_missing(r["accuracy"]):
            continue
        protocol = _PROTOCOL_NAMES.get(r["protocol"], r["protocol"])
        results.append(
            EvalResult(
                task_type=hub_task_type(r["task"]),
                task_name=f"Multi-modal entity linking, task {r['task']}, {protocol}",
                dataset_type=dataset_id,
                dataset_name=dataset_name,
                dataset_config=f"{r['topic']}-{r['task']}",
                dataset_split=r["split"],
                metric_type="accuracy",
                metric_value=float(r["accuracy"]),
                metric_name=f"Accuracy ({protocol})",
            )
        )
    return results


def base_model_of(summary: Mapping[str, Any], base_model: str | None = None) -> str | None:
    """The Hub id training started from: `base_model` if given, else what the training summary recorded.

    `train` records a Hub id only when the model it loaded was not a local folder, so a local base gives None
    whatever the working directory.
    """
    return base_model or summary.get("base_model")


def build_model_card(
    checkpoint_dir: str | os.PathLike[str],
    results_records: Sequence[Mapping[str, Any]] | None,
    *,
    repo_id: str,
    dataset_id: str | None,
    license: str | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    base_model: str | None = None,
    model: str = MODEL_NAME,
    synthetic: bool | None = None,
) -> ModelCard:
    """Render the model card of a CLIP_ND checkpoint. Pure: reads the checkpoint's JSON files, writes nothing.

    Args:
        checkpoint_dir (`str` or `os.PathLike`):
            The exported checkpoint: ``config.json`` and, when present, ``training_summary.json``.
        results_records (`Sequence[Mapping]`, *optional*):
            Records of a results file (`m3el_hf.evaluation.results.read_results`); those of `model` are the
            card's results, the other models are shown as baselines.
        repo_id (`str`):
            The model repo, used in the loading snippets.
        dataset_id (`str`, *optional*):
            The M³EL benchmark dataset repo the scores refer to (None: the card names no dataset).
        license (`str`, *optional*):
            The card's ``license`` (a Hub licence id such as ``mit``); `push_model` requires one.
        plot_path (`str` or `os.PathLike`, *optional*):
            When given, the card embeds the plot as ``accuracy.png`` (the caller uploads it under that name).
        base_model (`str`, *optional*):
            The Hub id training started from; defaults to the one ``training_summary.json`` recorded (none when
            training started from a local folder).
        model (`str`, *optional*, defaults to `"CLIP_ND"`):
            Which records are this checkpoint's.
        synthetic (`bool`, *optional*):
            Whether the scores come from synthetic data; by default what the training summary recorded about
            its data (``synthetic_data``), else no.
    """
    checkpoint_dir = Path(checkpoint_dir)
    records = list(results_records or [])
    settings = settings_of(_read_json(checkpoint_dir / "config.json"))
    summary = read_summary(checkpoint_dir)
    base = base_model_of(summary, base_model)
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        base_model=base,
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=["clip", "clipnd", "entity-linking", "multimodal-entity-linking", "m3el"],
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy"],
        eval_results=model_index_results(records, dataset_id, model=model, dataset_name=_dataset_name(records)) or None,
    )
    if synthetic is None:
        synthetic = bool(summary.get("synthetic_data"))
    template = resources.files("m3el_hf.model_cards").joinpath("model_card.md").read_text(encoding="utf-8")
    templates = TextTemplates.of(settings)
    return ModelCard.from_template(
        card_data,
        template_str=template,
        title=f"{model}: {repo_id.split('/')[-1]}",
        version=__version__,
        base_model_text=_base_model_text(base, summary),
        license_text=f"`{license}`" if license else "not declared",
        dataset_text=f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})" if dataset_id else "not given",
        training_text=_training_text(summary, settings),
        results_text=_results_text(records, model, plot_path is not None),
        hub_tasks_text=_hub_tasks_text(),
        repo_id=repo_id,
        entity_template=templates.entity_text_template,
        mention_template=templates.mention_template,
        limitations_text=_limitations_text(synthetic),
        citation=CITATION,
    )


def _dataset_name(records: Sequence[Mapping[str, Any]]) -> str:
    """M³EL, or the topics of another dataset the records score (a ``prepare --format mimic`` one: its name)."""
    others = unique(r["topic"] for r in records if r["topic"] not in (*TOPICS, ALL_TOPICS))
    return ", ".join(others) if others else "M³EL"


def _base_model_text(base: str | None, summary: Mapping[str, Any]) -> str:
    if base:
        return f"[{base}](https://huggingface.co/{base})"
    started = summary.get("config", {}).get("model")
    if started:
        return f"`{_show(started)}`, a local checkpoint that is not on the Hub (so no `base_model` is declared)"
    return "unknown (no training summary was exported with this checkpoint)"


def _hub_tasks_text() -> str:
    rows = ["| M³EL tasks | Hub task in `model-index` |", "|---|---|"]
    for kind, tasks in (("T", "T-T"), ("I", "I-T, TI-T"), ("II", "I-I"), ("retrieval", "T-I, TI-I, *-TI")):
        rows.append(f"| {tasks} | `{HUB_TASK_TYPES[kind]}` |")
    return "\n".join(rows)
