"""The demo, shortened: every stage runs and leaves what the README promises (the full run is `make demo`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`m3el-hf demo` as `make demo` runs it (1,200 instances, the tiny-cpu recipe), margin check on."""
    out = tmp_path_factory.mktemp("full-demo") / "demo-out"
    run_demo(DemoConfig(out=out))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


@pytest.mark.slow
def test_at_the_demo_scale_image_tasks_measure_linking_not_copies(full_demo: Path, capsys) -> None:
    """Leak-free I-I: the random CLIP scores about chance, the trained CLIP_ND far above it."""
    import datasets

    test = datasets.load_dataset(str(full_demo / "m3el"), "all", split="test")
    test = test.cast_column("mention_image", datasets.Image(decode=False))
    test = test.cast_column("candidate_images", datasets.List(datasets.Image(decode=False)))
    odds: dict[str, list[float]] = {}
    leaked = 0
    for row in test:
        images = row["candidate_images"]
        if row["mention_image"] is None or images[row["label"]] is None:
            continue
        if row["mention_image_leak"] in ("copy", "near"):
            leaked += 1
            continue
        odds.setdefault(row["topic"], []).append(1 / sum(image is not None for image in images))
    chance = sum(sum(values) / len(values) for values in odds.values()) / len(odds)  # topics weigh the same
    cells = {(r["model"], r["protocol"]): r for r in read_results(full_demo / "results.json") if r["task"] == "I-I"}
    cells = {key: r for key, r in cells.items() if r["topic"] == "all"}
    random, trained = (cells[model, "candidates-leak-free"] for model in ("zero-shot CLIP", "CLIP_ND"))
    with capsys.disabled():
        print(
            f"\nleak-free I-I at the demo's scale ({sum(map(len, odds.values()))} test mentions, {leaked} leaked left "
            f"out): chance "
            f"{chance:.3f}, random CLIP {random['accuracy']:.3f}, CLIP_ND {trained['accuracy']:.3f}"
        )
    assert (random["evaluated"], random["leaked"]) == (sum(map(len, odds.values())), leaked) and leaked > 0
    assert random["accuracy"] < chance + 0.15  # the pictures share only the entity's colour and shape
    assert trained["accuracy"] > chance + 0.35


@pytest.mark.slow
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
    entries = yaml.safe_load((out / "publish" / "model" / ".eval_results" / "m3el-synthetic-demo.yaml").read_text())
    benchmark = yaml.safe_load((out / "publish" / "dataset" / "eval.yaml").read_text())
    assert benchmark["evaluation_framework"] == "mteb"
    assert all("harness: m3el-hf's built-in evaluator (not MTEB)" in e["notes"] for e in entries)
    assert all(e["notes"].endswith("; unofficial: the scores come from synthetic data") for e in entries)
    ids = {task["id"] for task in benchmark["tasks"]}
    assert {e["dataset"]["task_id"] for e in entries} <= ids and "M3ELI2ICandidatesLeakFree" in ids


@pytest.mark.slow
def test_the_demo_refuses_a_used_folder_unless_told(short_demo: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass --overwrite"):
        run_demo(DemoConfig(out=short_demo, instances=100, max_steps=3, min_margin=-1.0))


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs_on_the_demo_outputs(short_demo: Path) -> None:
    """As written, offline, from the folder that holds demo-out/ (where `make demo` leaves it)."""
    blocks = _python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    printed = []
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=short_demo.parent, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip(), "a README snippet prints what it shows"
        for line in done.stdout.strip().splitlines():
            assert ":" in line, f"unlabelled output {line!r}"
        printed.append(done.stdout)
    assert any("stock CLIPModel gives the same text embedding: True" in out for out in printed)
    assert any(out.startswith("best entity: Q") for out in printed)  # linking a mention in three lines


def test_margins_are_checked_against_each_baseline_under_both_protocols(capsys) -> None:
    overall = {
        "candidates": {"zero-shot CLIP": 0.60, "CLIP_ND (name only)": 0.75, "CLIP_ND": 0.82},
        "candidates-leak-free": {"zero-shot CLIP": 0.30, "CLIP_ND (name only)": 0.52, "CLIP_ND": 0.55},
    }
    margins = check_margins(overall, 0.02)
    assert margins["candidates"] == pytest.approx({"zero-shot CLIP": 0.22, "CLIP_ND (name only)": 0.07})
    assert margins["candidates-leak-free"] == pytest.approx({"zero-shot CLIP": 0.25, "CLIP_ND (name only)": 0.03})
    out = capsys.readouterr().out
    assert "CLIP_ND vs CLIP_ND (name only): +0.070 mean accuracy over the 9 tasks (protocol candidates" in out
    assert "+0.030 mean accuracy over the 6 tasks with a mention image, leaked instances left out" in out
    with pytest.raises(ValueError, match=r"beat \{'CLIP_ND \(name only\) \(candidates-leak-free\)': 0.03\} by less"):
        check_margins(overall, 0.05)
