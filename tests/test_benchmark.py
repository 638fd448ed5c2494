"""benchmark: the eval.yaml that registers M³EL as a Hub benchmark run by MTEB, and its task ids."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import DatasetCard

from m3el_hf.benchmark import PROTOCOLS, eval_yaml, mteb_task_name, task_id
from m3el_hf.tasks import TASK_NAMES, get_task


def test_eval_yaml_declares_every_mteb_task_per_topic_and_overall_and_prepare_writes_it(movies_release) -> None:
    text = (movies_release / "eval.yaml").read_text(encoding="utf-8")
    assert text == eval_yaml(("movies",))
    spec = yaml.safe_load(text)
    assert list(spec) == ["name", "description", "evaluation_framework", "tasks"]
    assert spec["evaluation_framework"] == "mteb"
    for phrase in ("candidate list", "knowledge base", "left out and counted", "expected value", "mean over"):
        assert phrase in spec["description"]
    names = [mteb_task_name(t, p) for p in PROTOCOLS for t in TASK_NAMES]
    names = [name for name in names if name is not None]
    assert len(names) == 9 + 9 + 6 + 6
    assert spec["tasks"] == [
        entry
        for name in names
        for entry in ({"id": name}, {"id": f"{name}_movies_test", "config": "movies", "split": "test"})
    ]
    configs = {c["config_name"] for c in DatasetCard.load(movies_release / "README.md").data.configs}
    assert all(t["config"] in configs for t in spec["tasks"] if "config" in t)


def test_task_ids_are_formed_as_mtebs_writer_forms_them() -> None:
    assert task_id("movies", "T-TI") == "M3ELT2TICandidates_movies_test"
    assert task_id("all", "TI-I", "kb") == "M3ELTI2IKb"
    assert task_id("books", "I-I", "candidates-leak-free") == "M3ELI2ICandidatesLeakFree_books_test"
    assert mteb_task_name("T-I", "kb-leak-free") is None and not get_task("T-I").mention_needs_image
    with pytest.raises(ValueError, match="no mention image"):
        task_id("books", "T-T", "candidates-leak-free")
    with pytest.raises(ValueError, match="No benchmark task for protocol 'whole'"):
        task_id("books", "TI-TI", "whole")
