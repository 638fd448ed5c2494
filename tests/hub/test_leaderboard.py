"""leaderboard: the `.eval_results` entries of a model's scores, for the benchmark's tasks."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import parse_eval_result_entries

from m3el_hf.data.benchmark import eval_yaml
from m3el_hf.hub.leaderboard import EVAL_RESULTS_DIR, eval_results_files, write_eval_results
from m3el_hf.tasks import TASK_NAMES


def test_eval_results_reference_existing_benchmark_tasks(records):
    files = eval_results_files(records, "me/m3el", dataset_revision="abc123")
    assert list(files) == ["m3el.yaml"]
    entries = parse_eval_result_entries(yaml.safe_load(files["m3el.yaml"]))
    task_ids = {t["id"] for t in yaml.safe_load(eval_yaml(("movies",)))["tasks"]}
    headline = [r for r in records if (r["model"], r["protocol"]) == ("CLIP_ND", "candidates")]
    assert {e.task_id: e.value for e in entries} == {f"{r['topic']}-{r['task']}": r["accuracy"] for r in headline}
    assert {e.task_id for e in entries} <= task_ids
    assert {(e.dataset_id, e.dataset_revision) for e in entries} == {("me/m3el", "abc123")}
    assert all("candidates" in e.notes for e in entries)


def test_write_eval_results_for_any_evaluated_model(records, tmp_path):
    (path,) = write_eval_results(records, tmp_path, "me/m3el", "zero-shot CLIP")
    assert path == tmp_path / EVAL_RESULTS_DIR / "m3el.yaml"
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert len(entries) == 2 * len(TASK_NAMES) and entries[0].value == pytest.approx(0.1)
    assert write_eval_results(records, tmp_path / "none", "me/m3el", "unknown model") == []
