"""A collated batch of every task, shared by the batch-check and training-step tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.tasks import TASK_NAMES


def _row(i: int) -> dict:
    candidates = [{"qid": f"Q{10 * i + j + 1}", "name": f"name {j} of {i}", "description": "a film"} for j in range(3)]
    return {
        "id": f"row-{i}",
        "mention": "john",
        "sentence": f"john was born in paris in {1900 + i}",
        "mention_image": Image.new("RGB", (12, 9), (10 * i, 40, 7)),
        "candidates": candidates,
        "candidate_images": [Image.new("RGB", (9, 12), (20 * j, 9, 70)) for j in range(3)],
        "label": i % 3,
    }


@pytest.fixture(scope="session")
def all_task_rows() -> list[dict]:
    """Twelve rows with every image present, so that no task drops one."""
    return [_row(i) for i in range(12)]


@pytest.fixture(scope="session")
def all_task_collator(tiny_clip_path: Path) -> M3ELCollator:
    """The tiny checkpoint's collator over all nine tasks, with hard negatives."""
    return M3ELCollator.from_pretrained(tiny_clip_path, tasks=TASK_NAMES, hard_negatives=True, seed=1)


@pytest.fixture(scope="session")
def all_task_batch(all_task_collator: M3ELCollator, all_task_rows: list[dict]) -> dict:
    """Text-only, image-only and fused rows on both sides (tests must not modify it)."""
    batch = all_task_collator(all_task_rows)
    assert len(set(batch["task_ids"].tolist())) >= 6
    return batch
