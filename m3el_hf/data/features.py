"""The public schema of the prepared M³EL dataset, declared once.

Every builder config, the Parquet files, the collator and the evaluator read these names.
"""

from __future__ import annotations

from datasets import Features, Image, List, Value

from ..tasks import Task, get_task

__all__ = [
    "BASE_COLUMNS",
    "INSTANCE_FEATURES",
    "KB_FEATURES",
    "KB_SPLIT",
    "SPLITS",
    "task_columns",
    "task_features",
]

IMAGE_SOURCE = {"file": Value("string"), "url": Value("string")}
"""Provenance of an image: its Wikimedia Commons file name and source URL (for licensing)."""

INSTANCE_FEATURES = Features(
    {
        "id": Value("string"),
        "topic": Value("string"),
        "mention": Value("string"),
        "sentence": Value("string"),
        "mention_image": Image(),
        "mention_image_source": IMAGE_SOURCE,
        "mention_image_leak": Value("string"),
        "mention_image_near_candidates": List(Value("int32")),
        "candidates": List({"qid": Value("string"), "name": Value("string"), "description": Value("string")}),
        "candidate_images": List(Image()),
        "candidate_image_sources": List(IMAGE_SOURCE),
        "label": Value("int32"),
        "gold_qid": Value("string"),
        "tasks": List(Value("string")),
        "extra": Value("string"),
    }
)
"""One row per mention. `candidate_images` and `candidate_image_sources` are aligned with
`candidates` (null where a candidate has no image); `mention_image_leak` says whether the mention's image is
a ``"copy"`` or a ``"near"``-duplicate of the gold's (or ``"none"``; null without both images) and
`mention_image_near_candidates` lists the other candidates whose image is one (`m3el_hf.data.leak`);
`label` indexes the gold candidate;
`tasks` lists the tasks the instance is usable for; `extra` holds the record's
non-standard fields (e.g. ``difficulty``) as a JSON object."""

KB_FEATURES = Features(
    {
        "topic": Value("string"),
        "qid": Value("string"),
        "name": Value("string"),
        "description": Value("string"),
        "image": Image(),
        "image_source": IMAGE_SOURCE,
    }
)
"""One row per unique entity of a topic: the knowledge base for whole-KB ranking."""

KB_SPLIT = "kb"
"""The single split of the knowledge-base configs."""

SPLITS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
"""Split ratios; membership is a hash of the instance content, so it never depends on a seed."""

BASE_COLUMNS: tuple[str, ...] = ("id", "topic", "candidates", "label", "gold_qid", "tasks")
_MENTION_TEXT = ("mention", "sentence")
_MENTION_IMAGE = ("mention_image", "mention_image_source", "mention_image_leak", "mention_image_near_candidates")
_ENTITY_IMAGE = ("candidate_images", "candidate_image_sources")


def task_columns(task: str | Task) -> list[str]:
    """The columns a task config keeps, in schema order.

    Candidate names and descriptions stay in every task (`candidates` also carries the Qids
    that the label refers to); image columns appear only where the task uses images.
    """
    task = get_task(task)
    keep = set(BASE_COLUMNS)
    if task.mention_needs_text:
        keep.update(_MENTION_TEXT)
    if task.mention_needs_image:
        keep.update(_MENTION_IMAGE)
    if task.entity_needs_image:
        keep.update(_ENTITY_IMAGE)
    return [name for name in INSTANCE_FEATURES if name in keep]


def task_features(task: str | Task) -> Features:
    """`INSTANCE_FEATURES` restricted to `task_columns(task)`."""
    return Features({name: INSTANCE_FEATURES[name] for name in task_columns(task)})
