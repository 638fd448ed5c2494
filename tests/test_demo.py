"""The demo, shortened: every stage runs and leaves what the README promises (the full run is `make demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from huggingface_hub import DatasetCard, ModelCard

from m3el_hf.demo import MODEL_NAMES, DemoConfig, check_margins, run_demo
from m3el_hf.evaluation.results import read_results


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_short_demo_leaves_results_checkpoints_and_publishable_folders(tmp_path: Path, capsys) -> None:
    out = run_demo(DemoConfig(out=tmp_path / "demo", instances=100, max_steps=3, min_margin=-1.0))
    records = read_results(out / "results.json")
    assert {r["model"] for r in records} == set(MODEL_NAMES)
    assert json.loads((out / "results.json").read_text())["synthetic"] is True
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    for run in ("clipnd", "clipnd-name-only"):
        summary = json.loads((out / run / "final" / "training_summary.json").read_text())
        assert summary["steps"] == 3 and summary["config"]["augment_description"] is (run == "clipnd")
    dataset_card = DatasetCard.load(out / "publish" / "dataset" / "README.md")
    assert dataset_card.data.pretty_name.startswith("Synthetic")
    model_card = ModelCard.load(out / "publish" / "model" / "README.md")
    assert model_card.data.eval_results and "These scores come from a synthetic release" in model_card.text
    assert (out / "publish" / "model" / ".eval_results" / "m3el-synthetic-demo.yaml").is_file()
    printed = capsys.readouterr().out
    assert "Dry run: wrote" in printed and "README.md" in printed and "CLIP_ND vs zero-shot CLIP:" in printed


def test_margins_are_checked_against_each_baseline(capsys) -> None:
    overall = {"zero-shot CLIP": 0.60, "CLIP_ND (name only)": 0.75, "CLIP_ND": 0.82}
    assert check_margins(overall, 0.05) == pytest.approx({"zero-shot CLIP": 0.22, "CLIP_ND (name only)": 0.07})
    assert "CLIP_ND vs CLIP_ND (name only): +0.070" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"beat \{'CLIP_ND \(name only\)': 0.07\} by less than --min-margin 0.1"):
        check_margins(overall, 0.1)
