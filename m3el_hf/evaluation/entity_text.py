"""Degraded entity text, to measure how much a model leans on descriptions: ``evaluate --entity-text``.

A variant rewrites every entity's description before the checkpoint's entity template writes its text:

- ``full``: the description as it is (the default; today's evaluation exactly);
- ``name``: no description at all, the name only;
- ``truncate:N``: the first N words of the description (split on white space);
- ``drop:P``: a seeded share P of the entities (``round(P × count)``) lose their description;
- ``shuffle``: the descriptions are swapped between the entities, seeded, so that none keeps its own (a
  derangement; impossible with a single entity, which keeps its own).

The entities are every distinct ``(qid, description)`` of the evaluated data, candidates and knowledge base
together, in sorted order: a variant gives the same texts whatever order the rows come in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..modeling.templates import TextTemplates

__all__ = ["FULL", "DegradedTemplates", "EntityTextVariant", "degrade"]

FULL = "full"
_SPEC = re.compile(r"^(?:(full|name|shuffle)|truncate:(\d+)|drop:(0(?:\.\d+)?|1(?:\.0+)?|\.\d+))$")


@dataclass(frozen=True)
class EntityTextVariant:
    """One ``--entity-text`` variant (see the module), with the seed of ``drop`` and ``shuffle``.

    >>> EntityTextVariant("drop:0.5").descriptions([("Q1", "a b"), ("Q2", "c"), ("Q3", "d e f"), ("Q4", "")])
    {('Q1', 'a b'): '', ('Q2', 'c'): 'c', ('Q3', 'd e f'): '', ('Q4', ''): ''}
    """

    spec: str = FULL
    seed: int = 0

    def __post_init__(self) -> None:
        if not _SPEC.match(self.spec):
            raise ValueError(
                "--entity-text must be full, name, truncate:N (N words, N >= 0), drop:P (a share, 0 <= P <= 1) or "
                f"shuffle, got {self.spec!r}."
            )

    def descriptions(self, entities: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The description each ``(qid, description)`` of `entities` is encoded with under this variant."""
        keys = sorted(set(entities))
        old = [description for _, description in keys]
        kind, _, value = self.spec.partition(":")
        rng = np.random.default_rng(self.seed)
        if kind == "name":
            new = [""] * len(old)
        elif kind == "truncate":
            new = [" ".join(description.split()[: int(value)]) for description in old]
        elif kind == "drop":
            dropped = set(rng.permutation(len(old))[: round(float(value) * len(old))].tolist())
            new = ["" if i in dropped else description for i, description in enumerate(old)]
        elif kind == "shuffle":
            order = rng.permutation(len(old)).tolist()
            new = list(old)
            for position, i in enumerate(order):  # each entity takes the next one's description in a random cycle
                new[i] = old[order[(position + 1) % len(order)]]
        else:
            new = old
        return dict(zip(keys, new, strict=True))


@dataclass(frozen=True)
class DegradedTemplates:
    """A checkpoint's `TextTemplates` writing each entity with the description a variant gave it."""

    templates: TextTemplates
    descriptions: Mapping[tuple[str, str], str]

    def mention_text(self, mention: str | None, sentence: str | None) -> str:
        """The mention's text, unchanged."""
        return self.templates.mention_text(mention, sentence)

    def entity_text(self, entity: Mapping[str, Any]) -> str:
        """The entity's text with its degraded description; `entity` needs its ``qid``."""
        key = (entity["qid"], entity.get("description") or "")
        return self.templates.entity_text({**entity, "description": self.descriptions[key]})


def degrade(templates: TextTemplates, variant: EntityTextVariant, instances: Any, kb: Any | None) -> DegradedTemplates:
    """`templates` under `variant`, over the entities of `instances` (their candidates) and of `kb` (if given)."""
    entities: set[tuple[str, str]] = set()
    for table in instances.select_columns(["candidates"]).with_format("arrow").iter(batch_size=1024):
        for candidates in table.column("candidates").to_pylist():
            entities.update((entity["qid"], entity.get("description") or "") for entity in candidates)
    if kb is not None:
        descriptions = (description or "" for description in kb["description"])
        entities.update(zip(kb["qid"], descriptions, strict=True))
    return DegradedTemplates(templates, variant.descriptions(entities))
