"""The five M³EL topics and the nine tasks (mention modality × entity modality)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MODALITIES", "TASKS", "TASK_NAMES", "TOPICS", "Modality", "Task", "get_task"]

Modality = Literal["T", "I", "TI"]

TOPICS: tuple[str, ...] = ("movies", "common", "person", "books", "sports")
MODALITIES: tuple[Modality, ...] = ("T", "I", "TI")


@dataclass(frozen=True)
class Task:
    """One M³EL task: which modalities the mention side and the entity side use.

    >>> get_task("TI-I").mention_needs_image, get_task("TI-I").entity_needs_text
    (True, False)
    """

    mention: Modality
    entity: Modality

    @property
    def name(self) -> str:
        return f"{self.mention}-{self.entity}"

    @property
    def mention_needs_text(self) -> bool:
        return "T" in self.mention

    @property
    def mention_needs_image(self) -> bool:
        return "I" in self.mention

    @property
    def entity_needs_text(self) -> bool:
        return "T" in self.entity

    @property
    def entity_needs_image(self) -> bool:
        return "I" in self.entity


TASKS: tuple[Task, ...] = tuple(Task(m, e) for m in MODALITIES for e in MODALITIES)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
_BY_NAME = {t.name: t for t in TASKS}


def get_task(name: str | Task) -> Task:
    """Return the task called `name` (e.g. ``"T-TI"``); raise a `ValueError` naming the valid ones."""
    if isinstance(name, Task):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown M³EL task {name!r}; expected one of {', '.join(TASK_NAMES)}.") from None
