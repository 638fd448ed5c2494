"""Training on a MIMIC-format dataset (WikiMEL's layout): its topic is its name, validation ranks the whole KB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from m3el_hf.cli import main
from m3el_hf.hub.model_card import build_model_card
from m3el_hf.training.config import SUMMARY_NAME, recipe_path


@pytest.fixture(scope="module")
def wikimel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synth --format mimic`` then ``prepare --format mimic``: 150 mentions (some nil, some without an image)."""
    root = tmp_path_factory.mktemp("wikimel")
    assert (
        main(["-q", "synth", "--format", "mimic", "--name", "wikimel", "--instances", "150", "--out", f"{root}/raw"])
        == 0
    )
    argv = ["-q", "prepare", "--format", "mimic", "--name", "wikimel", "--raw", f"{root}/raw", "--out", f"{root}/hub"]
    assert main(argv) == 0
    return root / "hub"


def test_train_then_evaluate_on_mimic_data(
    wikimel: Path, tiny_clip_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The packaged recipe takes the data's own topic; validation scores what ``evaluate --protocol kb`` scores."""
    recipe = yaml.safe_load(recipe_path("tiny-cpu").read_text())
    assert "topics" not in recipe  # every topic of --data: M³EL's five, or this dataset's one
    recipe.update(max_steps=4, per_device_batch_size=8, eval_every=2, cpu_threads=None)
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    argv = ["train", "--recipe", str(tmp_path / "short.yaml"), "--model", str(tiny_clip_path), "--data", str(wikimel)]
    assert main([*argv, "--output-dir", str(run)]) == 0
    assert f"--data {wikimel} --output results.json --protocol kb" in capsys.readouterr().out
    summary = json.loads((run / "final" / SUMMARY_NAME).read_text())
    assert summary["config"]["topics"] == ["wikimel"] and summary["steps"] == 4
    assert summary["validation"]["protocol"] == "kb" and summary["validation"]["best_step"] in (2, 4)
    # Mentions without a picture (an empty imgPath) sit out the tasks that need one, counted.
    assert summary["mentions"]["dropped_missing_image"] > 0

    output = tmp_path / "validation.json"
    argv = ["evaluate", "--model", str(run / "final"), "--data", str(wikimel), "--output", str(output), "-q"]
    assert main([*argv, "--split", "validation", "--protocol", "kb"]) == 0
    records = json.loads(output.read_text())["records"]
    assert {r["topic"] for r in records} == {"wikimel", "all"} and all(r["seen"] is True for r in records)
    mean = sum(r["accuracy"] for r in records if r["topic"] == "all") / 9
    # The last validation ran on the final weights, against the whole KB (not the gold-only lists: 100%).
    assert summary["validation"]["final_mean_accuracy"] == pytest.approx(mean, abs=1e-6) and mean < 0.5

    card = build_model_card(run / "final", records, repo_id="me/clipnd-wikimel", dataset_id="me/wikimel", model="run")
    assert {e.dataset_name for e in card.data.eval_results} == {"wikimel"}
    assert "Trained on the topic wikimel (not M³EL's)." in card.text and "unseen in training" not in card.text
    assert "| accuracy | hits@1 | hits@3 | hits@5 | mrr | mr |" in card.text
    assert "Scored on wikimel, not M³EL" in card.text and "MTEB task of the M³EL benchmark" not in card.text


def test_a_topic_the_data_lacks_is_refused_naming_its_topics(
    wikimel: Path, tiny_clip_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", "--recipe", "tiny-cpu", "--model", str(tiny_clip_path), "--data", str(wikimel)]
    assert main([*argv, "--output-dir", str(tmp_path / "run"), "--topics", "movies"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"m3el-hf train: error: {wikimel} has no topic(s) ['movies']. Its topics: wikimel."
    assert not (tmp_path / "run").exists()
