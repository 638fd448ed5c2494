"""benchmark: the eval.yaml that declares a benchmark task per topic and task, and their ids."""

from __future__ import annotations

import yaml
from huggingface_hub import DatasetCard

from m3el_hf.data.benchmark import eval_yaml, task_id
from m3el_hf.tasks import TASK_NAMES


def test_eval_yaml_declares_a_task_per_config_and_prepare_writes_it(movies_release):
    text = (movies_release / "eval.yaml").read_text(encoding="utf-8")
    assert text == eval_yaml(("movies",))
    spec = yaml.safe_load(text)
    assert {"name", "description", "evaluation_framework", "tasks"} <= spec.keys()
    assert "candidate list" in spec["description"] and "accuracy" in spec["description"]
    ids = [t["id"] for t in spec["tasks"]]
    assert ids == [task_id(topic, task) for topic in ("movies", "all") for task in TASK_NAMES]
    configs = {c["config_name"] for c in DatasetCard.load(movies_release / "README.md").data.configs}
    assert all(t["config"] in configs and t["split"] == "test" for t in spec["tasks"])
