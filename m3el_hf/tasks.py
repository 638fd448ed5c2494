"""The five M³EL topics and the nine tasks (mention modality × entity modality)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MODALITIES",
    "TASKS",
    "TASK_NAMES",
    "TOPICS",
    "Modality",
    "Task",
    "check_topics",
    "did_you_mean",
    "get_task",
]

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
        raise ValueError(f"Unknown task {name!r}{_choose(name, TASK_NAMES)}.") from None


def check_topics(topics: Sequence[str], choices: Sequence[str] | None = TOPICS) -> tuple[str, ...]:
    """`topics` as a tuple, or a `ValueError` naming the unknown or repeated ones (with a guess) and the choices.

    `choices` None takes any name (a prepared dataset's own topics, checked against the data when it is read).

    >>> check_topics(["movies", "books"]), check_topics(["wikimel"], choices=None)
    (('movies', 'books'), ('wikimel',))
    """
    unknown = [topic for topic in topics if choices is not None and topic not in choices]
    if unknown:
        raise ValueError(f"Unknown topic(s) {unknown}{_choose(unknown[0], choices)}.")
    repeated = sorted({topic for topic in topics if list(topics).count(topic) > 1})
    if repeated or not topics:
        hint = f"; choose from {', '.join(choices)}" if choices else ""
        raise ValueError(f"Topics must be distinct and at least one, got {list(topics)}{hint}.")
    return tuple(topics)


def _choose(value: str, choices: Sequence[str]) -> str:
    guess = did_you_mean(value, choices)
    return f"{guess} Choose from {', '.join(choices)}" if guess else f"; choose from {', '.join(choices)}"


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest of `choices` to a mistyped `value`, else ``""``.

    >>> did_you_mean("movie", TOPICS)
    "; did you mean 'movies'?"
    """
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
