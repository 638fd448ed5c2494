"""The demo, shortened: every stage runs and leaves what the README promises (the full run is `make demo`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from huggingface_hub import DatasetCard, ModelCard

from m3el_hf.demo import MODEL_NAMES, DemoConfig, check_margins, run_demo
from m3el_hf.evaluation.results import read_results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`m3el-hf demo` with 100 instances and 3 updates per training, into a folder named as the README's."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    run_demo(DemoConfig(out=out, instances=100, max_steps=3, min_margin=-1.0))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


def test_short_demo_leaves_results_checkpoints_and_publishable_folders(short_demo: Path) -> None:
    out = short_demo
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


def test_the_demo_refuses_a_used_folder_unless_told(short_demo: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass --overwrite"):
        run_demo(DemoConfig(out=short_demo, instances=100, max_steps=3, min_margin=-1.0))


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_every_python_block_of_the_readme_runs_on_the_demo_outputs(short_demo: Path) -> None:
    """As written, offline, from the folder that holds demo-out/ (where `make demo` leaves it)."""
    blocks = _python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=short_demo.parent, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip(), "a README snippet prints what it shows"
        for line in done.stdout.strip().splitlines():
            assert ":" in line, f"unlabelled output {line!r}"
    assert "stock CLIPModel gives the same text embedding: True" in done.stdout


def test_margins_are_checked_against_each_baseline(capsys) -> None:
    overall = {"zero-shot CLIP": 0.60, "CLIP_ND (name only)": 0.75, "CLIP_ND": 0.82}
    assert check_margins(overall, 0.05) == pytest.approx({"zero-shot CLIP": 0.22, "CLIP_ND (name only)": 0.07})
    assert "CLIP_ND vs CLIP_ND (name only): +0.070" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"beat \{'CLIP_ND \(name only\)': 0.07\} by less than --min-margin 0.1"):
        check_margins(overall, 0.1)
