"""The leaderboard entries of `m3el_hf.benchmark`: a model's `.eval_results` files, for the benchmark's tasks."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import parse_eval_result_entries

from m3el_hf.benchmark import EVAL_RESULTS_DIR, eval_results_files, eval_yaml, task_id, write_eval_results
from m3el_hf.tasks import TASK_NAMES, TOPICS


def test_eval_results_reference_existing_benchmark_tasks(records):
    """Per-topic entries use MTEB's ids and percent values; an overall entry needs all five topics scored."""
    files = eval_results_files(records, "me/m3el", dataset_revision="abc123")
    assert list(files) == ["m3el.yaml"]
    raw = yaml.safe_load(files["m3el.yaml"])
    assert {item["evaluation_framework"] for item in raw} == {"mteb"}
    entries = parse_eval_result_entries(raw)
    task_ids = {t["id"] for t in yaml.safe_load(eval_yaml(("movies",)))["tasks"]}
    scored = [r for r in records if r["model"] == "CLIP_ND" and r["topic"] == "movies" and r["accuracy"] is not None]
    expected = {task_id(r["topic"], r["task"], r["protocol"]): round(100 * r["accuracy"], 5) for r in scored}
    assert {e.task_id: e.value for e in entries} == expected
    assert {e.task_id for e in entries} <= task_ids and "M3ELT2TCandidates_movies_test" in expected
    assert {(e.dataset_id, e.dataset_revision) for e in entries} == {("me/m3el", "abc123")}
    assert all(e.notes.startswith("protocol: ") for e in entries)


def test_the_overall_entry_is_written_when_every_topic_was_scored(records):
    five = [
        {**r, "topic": topic}
        for r in records
        if r["model"] == "CLIP_ND" and r["topic"] == "movies" and r["accuracy"] is not None
        for topic in TOPICS
    ]
    overall = [{**r, "topic": "all"} for r in five if r["topic"] == "books"]
    entries = parse_eval_result_entries(yaml.safe_load(eval_results_files(five + overall, "me/m3el")["m3el.yaml"]))
    values = {e.task_id: e.value for e in entries}
    assert len(values) == 6 * len(overall) and values["M3ELT2TCandidates"] == round(100 * overall[0]["accuracy"], 5)


def test_write_eval_results_for_any_evaluated_model(records, tmp_path):
    (path,) = write_eval_results(records, tmp_path, "me/m3el", "zero-shot CLIP")
    assert path == tmp_path / EVAL_RESULTS_DIR / "m3el.yaml"
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert len(entries) == 2 * len(TASK_NAMES) and entries[0].value == pytest.approx(10.0)
    assert write_eval_results(records, tmp_path / "none", "me/m3el", "unknown model") == []
