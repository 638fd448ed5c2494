"""The CLIP_ND model card: recipe, results per task × topic next to the baselines, and machine-readable scores.

Scores are published twice: ``model-index`` in the card's YAML (`EvalResult`, read by the Hub's
model page and by tools that predate eval.yaml) and ``.eval_results/*.yaml`` (see
[`m3el_hf.hub.leaderboard`]), which feed the M³EL benchmark's leaderboard.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.benchmark import BENCHMARK_SPLIT, HEADLINE_PROTOCOL, task_id
from ..data.dataset_card import CITATION
from ..evaluation.results import is_missing, percent, unique
from ..training.config import SUMMARY_NAME
from ..version import __version__

__all__ = ["MODEL_NAME", "PLOT_NAME", "build_model_card", "model_index_results"]

logger = logging.getLogger(__name__)

MODEL_NAME = "CLIP_ND"
"""The `model` of our own records in a results file; the others are baselines."""
PLOT_NAME = "accuracy.png"

_PROTOCOL_TITLES = {
    "candidates": "candidate list (rank the instance's own candidates; the leaderboard metric)",
    "kb": "whole knowledge base (rank every entity of the topic's KB)",
}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SUMMARY_KEYS = ("topics", "tasks", "augment_description", "hard_negatives", "seed", "max_steps", "epochs")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-export the checkpoint.") from None


def _show(value: Any) -> str:
    """A summary value for the card: lists joined, local paths reduced to their name."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_show(v)}" for k, v in value.items())
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith(("./", "../", "~"))):
        return Path(value).name
    return str(value)


def _training_text(summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
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
    keys = ("accuracy", "hits@1", "hits@3", "hits@5", "mrr")
    rows = ["| topic | task | " + " | ".join(keys) + " | evaluated | excluded |", "|---" * (len(keys) + 4) + "|"]
    for r in records:
        values = " | ".join(percent(r.get(k)) for k in keys)
        rows.append(f"| {r['topic']} | {r['task']} | {values} | {r['evaluated']} | {r['excluded']} |")
    return "\n".join(rows)


def _results_text(records: Sequence[Mapping[str, Any]], model: str, plot: bool) -> str:
    ours = [r for r in records if r["model"] == model]
    if not ours:
        return "No evaluation results were given for this checkpoint (`m3el-hf push-model --results results.json`)."
    models = unique(r["model"] for r in records)
    parts = [
        f"Accuracy (%) on the **{BENCHMARK_SPLIT}** split, evaluated with `m3el-hf evaluate`; ties between "
        "candidate scores count as their expected value. "
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
        topic = "all" if any(r["topic"] == "all" for r in same) else mine[0]["topic"]
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
        "**Protocols are not comparable:** accuracy over the instance's candidate list (the leaderboard "
        "metric) is far easier than ranking the whole knowledge base; every table above names its protocol. "
        "Instances lacking a modality a task needs are excluded from that task (see `excluded`).",
        "Entity text relies on Wikidata descriptions; entities without one fall back to their name.",
    ]
    return "\n".join(f"- {line}" for line in lines)


def model_index_results(
    records: Sequence[Mapping[str, Any]], dataset_id: str, *, model: str = MODEL_NAME, dataset_name: str = "M³EL"
) -> list[EvalResult]:
    """One `EvalResult` (accuracy) per record of `model` with a value, for the card's ``model-index``. Pure."""
    return [
        EvalResult(
            task_type="zero-shot-image-classification",
            task_name=f"Multi-modal entity linking ({r['task']})",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_config=task_id(r["topic"], r["task"]),
            dataset_split=r["split"],
            metric_type="accuracy",
            metric_value=float(r["accuracy"]),
            metric_name=f"Accuracy ({r['protocol']} protocol)",
            metric_config=r["protocol"],
        )
        for r in records
        if r["model"] == model and not is_missing(r["accuracy"])
    ]


def _base_model(base_model: str | None, summary: Mapping[str, Any]) -> str | None:
    return base_model or summary.get("config", {}).get("model") or summary.get("base_model")


def build_model_card(
    checkpoint_dir: str | os.PathLike[str],
    results_records: Sequence[Mapping[str, Any]] | None,
    *,
    repo_id: str,
    dataset_id: str,
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
            Records of a results file (`m3el_hf.evaluation.evaluator.read_results`); those of `model` are the card's
            results, the other models are shown as baselines.
        repo_id (`str`):
            The model repo, used in the loading snippets.
        dataset_id (`str`):
            The M³EL benchmark dataset repo the scores refer to.
        plot_path (`str` or `os.PathLike`, *optional*):
            When given, the card embeds the plot as ``accuracy.png`` (the caller uploads it under that name).
        base_model (`str`, *optional*):
            The checkpoint training started from; defaults to the ``model`` of ``training_summary.json``.
        model (`str`, *optional*, defaults to `"CLIP_ND"`):
            Which records are this checkpoint's.
        synthetic (`bool`, *optional*):
            Whether the scores come from synthetic data; by default what the training summary recorded about
            its data (``synthetic_data``), else no.
    """
    checkpoint_dir = Path(checkpoint_dir)
    records = list(results_records or [])
    config = _read_json(checkpoint_dir / "config.json")
    summary = _read_json(checkpoint_dir / SUMMARY_NAME)
    base = _base_model(base_model, summary)
    hub_base = base if base and _REPO_ID.match(base) and not Path(base).exists() else None
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=hub_base,
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=["clip", "clipnd", "entity-linking", "multimodal-entity-linking", "m3el"],
        datasets=[dataset_id],
        metrics=["accuracy"],
        eval_results=model_index_results(records, dataset_id, model=model) or None,
    )
    if synthetic is None:
        synthetic = bool(summary.get("synthetic_data"))

    template = resources.files("m3el_hf.model_cards").joinpath("model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        title=f"{model}: {repo_id.split('/')[-1]}",
        version=__version__,
        base_model_text=f"[{hub_base}](https://huggingface.co/{hub_base})"
        if hub_base
        else (_show(base) if base else "unknown"),
        dataset_id=dataset_id,
        dataset_url=f"https://huggingface.co/datasets/{dataset_id}",
        training_text=_training_text(summary, config),
        results_text=_results_text(records, model, plot_path is not None),
        repo_id=repo_id,
        entity_template=config.get(
            "entity_template" if config.get("augment_description", True) else "entity_name_template",
            "{name} : {description}",
        ),
        mention_template=config.get("mention_template", "{mention} : {sentence}"),
        limitations_text=_limitations_text(synthetic),
        citation=CITATION,
    )
