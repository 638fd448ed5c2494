"""Unseen topics: a run on a subset of the topics says which, and `evaluate` marks each topic seen or unseen."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image

from m3el_hf.cli import main
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.tasks import TASK_NAMES, TOPICS
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig, recipe_path
from m3el_hf.training.loop import train

TRAINED = ("movies", "common", "person", "books")
TWO = ("movies", "books")  # those of the `m3el_data` fixture (conftest.py)


@pytest.fixture(scope="module")
def five_topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared release of all five topics: 100 synthetic instances, seed 3."""
    root = tmp_path_factory.mktemp("five-topics")
    raw = synthesize(SynthConfig(out=root / "raw", instances=100, seed=3, topics=TOPICS))
    return prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=TOPICS)).out


def test_evaluate_marks_the_topics_a_checkpoint_never_saw(
    small_config: Callable[..., TrainConfig],
    five_topics: Path,
    tiny_clip_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    config = small_config(tmp_path / "run", data=str(five_topics), topics=TRAINED, max_steps=2)
    final = train(config)
    assert json.loads((final / SUMMARY_NAME).read_text())["config"]["topics"] == list(TRAINED)
    out = tmp_path / "results.json"
    argv = ["evaluate", "--model", str(final), str(tiny_clip_path), "--model-name", "sub", "stock"]
    assert main([*argv, "--data", str(five_topics), "--output", str(out), "--tasks", "T-T", "I-I"]) == 0
    printed = capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    marks = {(r["model"], r["topic"]): r["seen"] for r in records}
    assert marks == {
        **{("sub", topic): topic in TRAINED for topic in TOPICS},
        ("sub", "all"): None,  # four seen topics and one unseen
        **{("stock", topic): None for topic in (*TOPICS, "all")},  # a stock CLIP: no training summary
    }
    sub_table = printed.split("stock: accuracy")[0]
    assert "movies (seen)" in sub_table and "books (seen)" in sub_table and "sports (unseen)" in sub_table
    assert "(seen)" not in printed.split("stock: accuracy")[1].split("\n\n")[0]


@pytest.mark.slow
def test_leave_one_topic_out_scores_each_model_on_the_topic_it_never_saw(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = yaml.safe_load(recipe_path("tiny-cpu").read_text())
    recipe.update(max_steps=1, per_device_batch_size=8, eval_split=None, cpu_threads=None)
    (tmp_path / "one-step.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "loto"
    argv = ["generalization", "--model-base", str(tiny_clip_path), "--data", str(m3el_data), "--out", str(out)]
    assert main([*argv, "--recipe", str(tmp_path / "one-step.yaml"), "--topics", "movies", "books"]) == 0
    printed = capsys.readouterr().out
    for name, topics in (("without-movies", ["books"]), ("without-books", ["movies"]), ("all-topics", TWO)):
        summary = json.loads((out / name / "final" / SUMMARY_NAME).read_text())
        assert summary["config"]["topics"] == list(topics) and summary["steps"] == 1
    records = json.loads((out / "results.json").read_text())["records"]
    cells = {(r["model"], r["topic"], r["task"]): r for r in records}
    table = json.loads((out / "generalization.json").read_text())
    assert table["tasks"] == list(TASK_NAMES) and list(table["unseen"]) == list(TWO)
    for topic in TWO:
        for task in TASK_NAMES:
            unseen, everything = cells["without-" + topic, topic, task], cells["all-topics", topic, task]
            assert unseen["seen"] is False and everything["seen"] is True
            assert table["unseen"][topic][task] == unseen["accuracy"]
            assert table["all_topics"][topic][task] == everything["accuracy"]
    markdown = (out / "generalization.md").read_text()
    assert markdown in printed and markdown.count("\n| movies |") == markdown.count("\n| books |") == 2
    with Image.open(out / "generalization.png") as image:
        assert image.format == "PNG"
    # A run folder is not reused by accident.
    assert main([*argv, "--recipe", str(tmp_path / "one-step.yaml"), "--topics", "movies", "books"]) == 2


def test_leave_one_topic_out_refuses_a_bad_option_before_training(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "loto"
    argv = ["generalization", "--model-base", str(tiny_clip_path), "--data", str(m3el_data), "--out", str(out)]
    assert main([*argv, "--recipe", "tiny-cpu", "--all-topics-model", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert main([*argv, "--recipe", "tiny-gpu"]) == 2
    assert "neither a file nor a packaged recipe" in capsys.readouterr().err
    assert main([*argv, "--recipe", "tiny-cpu", "--topics", "movies"]) == 2
    assert "holding one out needs at least two topics" in capsys.readouterr().err
    assert not out.exists()
