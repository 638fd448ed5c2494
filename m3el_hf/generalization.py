"""``m3el-hf generalization``: leave-one-topic-out training, each model scored on the topic it never saw.

For each topic, CLIP_ND is trained (`train`) on the other topics and evaluated (`run_evaluate`, hence
`evaluate_model`) on all of them; its scores on the held-out topic form one row of a topics × tasks table,
next to the all-topics model's scores on the same topic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write, refuse_used_folder
from .benchmark import HEADLINE_PROTOCOL, PROTOCOLS, Protocol
from .evaluation.command import EvaluateConfig, run_evaluate
from .evaluation.results import percent
from .json_files import write_json
from .locations import check_checkpoint
from .tasks import TASK_NAMES, TOPICS, check_topics
from .training.config import TrainConfig, recipe_path

__all__ = [
    "ALL_TOPICS_MODEL",
    "GeneralizationConfig",
    "held_out_name",
    "held_out_table",
    "plot_generalization",
    "run_generalization",
]

logger = logging.getLogger(__name__)

ALL_TOPICS_MODEL = "all-topics"
"""The label (and run folder) of the model trained on every topic of the study."""


@dataclass(frozen=True)
class GeneralizationConfig:
    """Options of ``m3el-hf generalization``.

    >>> GeneralizationConfig(model_base="clip", data="m3el", recipe="tiny-cpu", out=Path("loto")).topics
    ('movies', 'common', 'person', 'books', 'sports')
    """

    model_base: str = field(
        metadata={"help": "CLIP or CLIP_ND checkpoint every training starts from (train's --model)."}
    )
    data: str = field(metadata={"help": "Prepared M³EL folder or Hub dataset id, with every topic of --topics."})
    recipe: str = field(
        metadata={
            "help": "Training recipe (train's --recipe): a YAML path or a packaged name; its topics are replaced."
        }
    )
    out: Path = field(
        metadata={
            "help": "Folder for the runs (without-TOPIC/, all-topics/), results.json (every model on every topic), "
            "generalization.json and .md (the held-out table) and generalization.png."
        }
    )
    topics: tuple[str, ...] = field(
        default=TOPICS, metadata={"help": "Topics held out one at a time; each training uses the others of these."}
    )
    all_topics_model: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint already trained on every --topics (e.g. a train run's final/) to compare with; "
            "trained with --recipe into OUT/all-topics when not given."
        },
    )
    split: str = field(default="test", metadata={"help": "Split the models are scored on."})
    protocol: Protocol = field(default=HEADLINE_PROTOCOL, metadata={"help": "Evaluation protocol (evaluate's)."})
    device: str | None = field(default=None, metadata={"help": "Evaluation device (default: cuda if available)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace what an earlier run wrote in --out."})

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "topics", check_topics(self.topics))
        if len(self.topics) < 2:
            raise ValueError(f"--topics {' '.join(self.topics)}: holding one out needs at least two topics.")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}.")


def held_out_name(topic: str) -> str:
    """The label (and run folder) of the model trained without `topic`."""
    return f"without-{topic}"


def run_generalization(config: GeneralizationConfig) -> Path:
    """Train without each topic in turn (and on all of them), evaluate, write the table and the plot.

    Returns:
        `Path`: ``OUT/generalization.json``.
    """
    from .training.loop import train

    refuse_used_folder(config.out, config.overwrite)
    plans = {held_out_name(topic): [t for t in config.topics if t != topic] for topic in config.topics}
    if config.all_topics_model is None:
        plans[ALL_TOPICS_MODEL] = list(config.topics)
    else:
        check_checkpoint(config.all_topics_model)
    # Every recipe is read before the first training: a bad option fails now, not an hour in.
    runs = {name: _train_config(config, name, topics) for name, topics in plans.items()}
    models = {}
    for name, run in runs.items():
        logger.info("Training %s on %s", name, ", ".join(run.topics))
        models[name] = train(run)
    models.setdefault(ALL_TOPICS_MODEL, config.all_topics_model)
    evaluation = EvaluateConfig(
        model=tuple(str(path) for path in models.values()),
        model_name=tuple(models),
        data=config.data,
        output=config.out / "results.json",
        topics=config.topics,
        split=config.split,
        protocol=(config.protocol,),
        device=config.device,
    )
    records = [record for result in run_evaluate(evaluation) for record in result.records]
    table = held_out_table(records, config.topics, config.protocol)
    text = _markdown(table, config)
    print(text)
    atomic_write(config.out / "generalization.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"Wrote {plot_generalization(table, config.out / 'generalization.png')}")
    payload = {"protocol": config.protocol, "split": config.split, "models": {k: str(v) for k, v in models.items()}}
    path = write_json(config.out / "generalization.json", {**payload, **table}, allow_nan=False)
    print(f"Wrote {path}")
    return path


def _train_config(config: GeneralizationConfig, name: str, topics: Sequence[str]) -> TrainConfig:
    """The recipe's training of `topics` from ``--model-base`` into ``OUT/name`` (a fresh or replaced folder)."""
    options = {"model": config.model_base, "data": config.data, "output_dir": config.out / name}
    return TrainConfig.from_yaml(recipe_path(config.recipe), **options, topics=topics, overwrite=True)


def held_out_table(records: Sequence[Mapping[str, Any]], topics: Sequence[str], protocol: str) -> dict[str, Any]:
    """Accuracy per topic and task: ``unseen`` of the model trained without the topic, ``all_topics`` of the
    all-topics model (``None`` where a task evaluated nothing)."""
    cells = {(r["model"], r["topic"], r["task"]): r["accuracy"] for r in records if r["protocol"] == protocol}
    tasks = [task for task in TASK_NAMES if any(key[2] == task for key in cells)]

    def row(model: str, topic: str) -> dict[str, float | None]:
        values = {task: cells.get((model, topic, task)) for task in tasks}
        return {task: None if v is None or math.isnan(v) else v for task, v in values.items()}

    return {
        "tasks": tasks,
        "unseen": {topic: row(held_out_name(topic), topic) for topic in topics},
        "all_topics": {topic: row(ALL_TOPICS_MODEL, topic) for topic in topics},
    }


def _markdown(table: Mapping[str, Any], config: GeneralizationConfig) -> str:
    tasks = table["tasks"]
    blocks = []
    for key, title in (("unseen", "trained without the topic (unseen)"), ("all_topics", "trained on all topics")):
        lines = [
            f"Accuracy (%), split {config.split!r}, protocol {config.protocol!r}: {title}",
            "",
            f"| topic | {' | '.join(tasks)} | mean |",
            "|---" * (len(tasks) + 2) + "|",
        ]
        for topic, cells in table[key].items():
            scored = [v for v in cells.values() if v is not None]
            mean = math.fsum(scored) / len(scored) if scored else None
            lines.append(f"| {topic} | {' | '.join(percent(cells[t]) for t in tasks)} | {percent(mean)} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def plot_generalization(table: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per topic: accuracy per task of the model that never saw it beside the all-topics model's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, topics = table["tasks"], list(table["unseen"])
    figure = Figure(figsize=(max(6.0, 0.7 * len(tasks)), 2.6 * len(topics)))
    FigureCanvasAgg(figure)
    for panel, topic in enumerate(topics):
        axes = figure.add_subplot(len(topics), 1, panel + 1)
        for j, (key, label) in enumerate((("unseen", "unseen (held out)"), ("all_topics", "all topics"))):
            heights = [math.nan if v is None else 100 * v for v in (table[key][topic][t] for t in tasks)]
            axes.bar([i + (j - 0.5) * 0.4 for i in range(len(tasks))], heights, 0.4, label=label)
        axes.set(title=topic, ylabel="accuracy (%)", ylim=(0, 100))
        axes.set_xticks(range(len(tasks)), tasks)
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
