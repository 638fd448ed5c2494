"""Unseen topics: a run on a subset of the topics says which, and `evaluate` marks each topic seen or unseen."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from m3el_hf.cli import main
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.tasks import TOPICS
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig
from m3el_hf.training.loop import train

TRAINED = ("movies", "common", "person", "books")


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
