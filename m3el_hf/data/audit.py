"""Counts that describe a prepared M³EL release: sizes, task coverage and a data audit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..tasks import TASK_NAMES

__all__ = ["DatasetAudit", "TopicAudit"]


@dataclass
class TopicAudit:
    """Counts for one topic, filled while instances are written."""

    splits: Counter = field(default_factory=Counter)
    task_coverage: Counter = field(default_factory=Counter)
    candidates: int = 0
    mention_images_missing: int = 0
    candidate_images_missing: int = 0
    mention_image_is_gold_image: int = 0
    gold_positions: Counter = field(default_factory=Counter)
    duplicates: int = 0
    kb_entities: int = 0
    leaks: Counter = field(default_factory=Counter)  # "{split}/{kind}": copy, near, none, unknown, near_other

    @property
    def instances(self) -> int:
        return sum(self.splits.values())

    def observe(
        self,
        split: str,
        *,
        num_candidates: int,
        label: int,
        tasks: list[str],
        mention_image_missing: bool,
        candidate_images_missing: int,
        mention_image_is_gold_image: bool,
        duplicate: bool,
        leak: str | None = None,
        near_candidates: int = 0,
    ) -> None:
        self.splits[split] += 1
        self.task_coverage.update(tasks)
        self.candidates += num_candidates
        self.gold_positions[label] += 1
        self.mention_images_missing += mention_image_missing
        self.candidate_images_missing += candidate_images_missing
        self.mention_image_is_gold_image += mention_image_is_gold_image
        self.duplicates += duplicate
        if not mention_image_missing:
            self.leaks[f"{split}/{leak or 'unknown'}"] += 1
            self.leaks[f"{split}/near_other"] += near_candidates > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "splits": dict(self.splits),
            "task_coverage": {task: self.task_coverage.get(task, 0) for task in TASK_NAMES},
            "candidates": self.candidates,
            "mention_images_missing": self.mention_images_missing,
            "candidate_images_missing": self.candidate_images_missing,
            "mention_image_is_gold_image": self.mention_image_is_gold_image,
            "gold_positions": {str(k): v for k, v in sorted(self.gold_positions.items())},
            "duplicates": self.duplicates,
            "kb_entities": self.kb_entities,
            "leaks": dict(sorted(self.leaks.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TopicAudit:
        return cls(
            splits=Counter(data["splits"]),
            task_coverage=Counter(data["task_coverage"]),
            candidates=data["candidates"],
            mention_images_missing=data["mention_images_missing"],
            candidate_images_missing=data["candidate_images_missing"],
            mention_image_is_gold_image=data["mention_image_is_gold_image"],
            gold_positions=Counter({int(k): v for k, v in data["gold_positions"].items()}),
            duplicates=data["duplicates"],
            kb_entities=data["kb_entities"],
            leaks=Counter(data["leaks"]),
        )


@dataclass
class DatasetAudit:
    """Per-topic `TopicAudit`s, with totals.

    >>> audit = DatasetAudit()
    >>> audit.topic("movies").splits["train"] += 1
    >>> audit.total().instances
    1
    """

    topics: dict[str, TopicAudit] = field(default_factory=dict)

    def topic(self, name: str) -> TopicAudit:
        """The counts of topic `name`, created empty on first use."""
        counts = self.topics.get(name)
        if counts is None:
            counts = self.topics[name] = TopicAudit()
        return counts

    def merge(self, other: DatasetAudit) -> None:
        for name, theirs in other.topics.items():
            ours = self.topic(name)
            for key, value in vars(theirs).items():
                mine = getattr(ours, key)
                if isinstance(mine, Counter):
                    mine.update(value)  # keeps zero counts, which `+` drops
                else:
                    setattr(ours, key, mine + value)

    def total(self) -> TopicAudit:
        total = DatasetAudit()
        for audit in self.topics.values():
            total.merge(DatasetAudit({"all": audit}))
        return total.topic("all")

    def to_dict(self) -> dict[str, Any]:
        return {name: audit.to_dict() for name, audit in self.topics.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetAudit:
        return cls({name: TopicAudit.from_dict(value) for name, value in data.items()})
