"""The accuracy plot: one bar per task and topic, one group per model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .results import unique

__all__ = ["plot_accuracy"]


def plot_accuracy(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], protocol: str = "candidates"
) -> Path:
    """Draw accuracy per task, one bar per topic, one panel per model, to a PNG (written atomically).

    Returns:
        `Path`: `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = [r for r in records if r["protocol"] == protocol]
    if not chosen:
        raise ValueError(
            f"No record has protocol {protocol!r}; the records have {unique(r['protocol'] for r in records)}."
        )
    models, tasks, topics = (unique(r[key] for r in chosen) for key in ("model", "task", "topic"))
    figure = Figure(figsize=(max(6.0, 0.9 * len(tasks) * max(1, len(topics) / 3)), 3.2 * len(models)))
    FigureCanvasAgg(figure)
    width = 0.8 / len(topics)
    for panel, model in enumerate(models):
        axes = figure.add_subplot(len(models), 1, panel + 1)
        cells = {(r["task"], r["topic"]): r["accuracy"] for r in chosen if r["model"] == model}
        for j, topic in enumerate(topics):
            heights = [100 * cells.get((task, topic), float("nan")) for task in tasks]
            axes.bar([i + (j - (len(topics) - 1) / 2) * width for i in range(len(tasks))], heights, width, label=topic)
        axes.set(title=f"{model} ({protocol})", ylabel="accuracy (%)", ylim=(0, 100))
        axes.set_xticks(range(len(tasks)), tasks)
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), title="topic")
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
