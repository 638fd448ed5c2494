"""The leaderboard entries of `m3el_hf.benchmark`: a model's `.eval_results` files, for the benchmark's tasks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from huggingface_hub import parse_eval_result_entries

from m3el_hf.benchmark import (
    EVAL_RESULTS_DIR,
    eval_result_entries,
    eval_results_files,
    eval_yaml,
    task_id,
    write_eval_results,
)
from m3el_hf.tasks import TASK_NAMES, TOPICS


def test_eval_results_reference_existing_benchmark_tasks(records, provenance):
    """Per-topic entries use MTEB's ids and percent values; an overall entry needs all five topics scored."""
    files = eval_results_files(records, "me/m3el", provenance=provenance)
    assert list(files) == ["m3el.yaml"]
    raw = yaml.safe_load(files["m3el.yaml"])
    entries = parse_eval_result_entries(raw)
    assert entries == eval_result_entries(records, "me/m3el", provenance=provenance)  # the Hub's schema, losslessly
    task_ids = {t["id"] for t in yaml.safe_load(eval_yaml(("movies",)))["tasks"]}
    scored = [r for r in records if r["model"] == "CLIP_ND" and r["topic"] == "movies" and r["accuracy"] is not None]
    expected = {task_id(r["topic"], r["task"], r["protocol"]): round(100 * r["accuracy"], 5) for r in scored}
    assert {e.task_id: e.value for e in entries} == expected
    assert {e.task_id for e in entries} <= task_ids and "M3ELT2TCandidates_movies_test" in expected
    assert {(e.dataset_id, e.dataset_revision) for e in entries} == {("me/m3el", "a" * 40)}
    assert all(e.notes.startswith("protocol: ") for e in entries)
    assert all(
        e.notes.endswith(
            "; harness: m3el-hf's built-in evaluator (not MTEB); m3el-hf 0.1.0, transformers 5.0.0, datasets 5.0.0, "
            f"torch 2.13.0; data: Hub dataset me/m3el at {'a' * 40} (not synthetic)"
        )
        for e in entries
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"synthetic": True}, "the scores come from synthetic data"),
        (
            {"dataset": "/data/m3el", "local": True, "dataset_revision": "sha256:0f"},
            "the scores come from the local folder /data/m3el",
        ),
        ({"dataset": "other/m3el"}, "the scores come from other/m3el"),
    ],
    ids=["synthetic", "local folder", "another dataset"],
)
def test_entries_not_of_the_benchmark_dataset_are_refused_unless_unofficial(records, provenance, change, reason):
    made = replace(provenance, **change)
    with pytest.raises(ValueError, match=f"^Refusing leaderboard entries for me/m3el: {reason}"):
        eval_results_files(records, "me/m3el", provenance=made)
    with pytest.raises(ValueError, match="results do not record how they were made"):
        eval_results_files(records, "me/m3el", provenance=None)
    entries = parse_eval_result_entries(
        yaml.safe_load(eval_results_files(records, "me/m3el", provenance=made, unofficial=True)["m3el.yaml"])
    )
    assert entries and all(f"; unofficial: {reason}" in e.notes for e in entries)
    revision = None if made.local else made.dataset_revision  # a local fingerprint is no Hub commit: notes only
    assert {e.dataset_revision for e in entries} == {revision}
    assert all(f"at {made.dataset_revision} " in e.notes for e in entries)


def test_the_overall_entry_is_written_when_every_topic_was_scored(records, provenance):
    five = [
        {**r, "topic": topic}
        for r in records
        if r["model"] == "CLIP_ND" and r["topic"] == "movies" and r["accuracy"] is not None
        for topic in TOPICS
    ]
    overall = [{**r, "topic": "all"} for r in five if r["topic"] == "books"]
    entries = parse_eval_result_entries(
        yaml.safe_load(eval_results_files(five + overall, "me/m3el", provenance=provenance)["m3el.yaml"])
    )
    values = {e.task_id: e.value for e in entries}
    assert len(values) == 6 * len(overall) and values["M3ELT2TCandidates"] == round(100 * overall[0]["accuracy"], 5)


def test_write_eval_results_for_any_evaluated_model(records, provenance, tmp_path):
    (path,) = write_eval_results(records, tmp_path, "me/m3el", "zero-shot CLIP", provenance=provenance)
    assert path == tmp_path / EVAL_RESULTS_DIR / "m3el.yaml"
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert len(entries) == 2 * len(TASK_NAMES) and entries[0].value == pytest.approx(10.0)
    assert write_eval_results(records, tmp_path / "none", "me/m3el", "unknown model", provenance=provenance) == []
