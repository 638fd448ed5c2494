"""benchmark: the eval.yaml that declares a benchmark task per topic and task, and their ids."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import DatasetCard

from m3el_hf.data.benchmark import LEAK_FREE_PROTOCOL, eval_yaml, task_id
from m3el_hf.tasks import TASK_NAMES, get_task


def test_eval_yaml_declares_a_task_per_config_and_prepare_writes_it(movies_release):
    text = (movies_release / "eval.yaml").read_text(encoding="utf-8")
    assert text == eval_yaml(("movies",))
    spec = yaml.safe_load(text)
    assert {"name", "description", "evaluation_framework", "tasks"} <= spec.keys()
    assert "candidate list" in spec["description"] and "accuracy" in spec["description"]
    ids = [t["id"] for t in spec["tasks"]]
    expected = []
    for topic in ("movies", "all"):
        for task in TASK_NAMES:
            expected.append(task_id(topic, task))
            if get_task(task).mention_needs_image:
                expected.append(task_id(topic, task, LEAK_FREE_PROTOCOL))
    assert ids == expected and len(ids) == 2 * (9 + 6)
    assert "movies-I-I-leak-free" in ids and "movies-T-I-leak-free" not in ids
    assert "leak-free" in spec["description"] and "mention_image_leak" in spec["description"]
    configs = {c["config_name"] for c in DatasetCard.load(movies_release / "README.md").data.configs}
    assert all(t["config"] in configs and t["split"] == "test" for t in spec["tasks"])
    leak_free = next(t for t in spec["tasks"] if t["id"] == "all-TI-I-leak-free")
    assert leak_free["config"] == "all-TI-I"


def test_task_ids_exist_for_the_leaderboard_protocols_only():
    assert task_id("books", "TI-TI", "candidates-leak-free") == "books-TI-TI-leak-free"
    with pytest.raises(ValueError, match="No benchmark task for protocol 'kb'"):
        task_id("books", "TI-TI", "kb")
