"""staging: the refreshed dataset card, and model folders free of local paths that stock tools open."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import DatasetCard, ModelCard

from m3el_hf.hub.push import push_model
from m3el_hf.hub.staging import refresh_dataset_card
from m3el_hf.json_files import read_json, write_json


def test_refresh_dataset_card_reproduces_prepare_card_for_any_repo_id(movies_release):
    assert str(refresh_dataset_card(movies_release)) == (movies_release / "README.md").read_text(encoding="utf-8")
    card = refresh_dataset_card(movies_release, repo_id="me/m3el")
    assert 'load_dataset("me/m3el", "movies")' in card.text
    assert card.data.to_dict() == DatasetCard.load(movies_release / "README.md").data.to_dict()


def test_a_model_trained_from_local_folders_is_staged_without_their_paths(checkpoint, tmp_path, monkeypatch):
    """A summary of a run from local folders (`train` records their names only, and no Hub id), staged from an
    unrelated folder: the card declares no base model, and no staged file holds a local path."""
    local = tmp_path / "inputs" / "run" / "final"
    shutil.copytree(checkpoint, local)
    summary = read_json(local / "training_summary.json")
    summary.update(base_model=None, dataset=None)
    summary["config"].update(model="tiny-clip", data="m3el", output_dir="x")
    write_json(local / "training_summary.json", summary)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "staged"
    push_model(local, "me/clipnd", dataset_id="me/m3el", license="apache-2.0", dry_run_dir=out)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None and card.data.license == "apache-2.0"
    assert "`tiny-clip`, a local checkpoint that is not on the Hub" in card.text
    published = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))["config"]
    assert (published["model"], published["data"], published["output_dir"]) == ("tiny-clip", "m3el", "x")
    for file in (p for p in out.rglob("*") if p.is_file()):
        content = file.read_bytes()
        assert str(tmp_path).encode() not in content and b"demo-out" not in content, file


def test_a_checkpoint_needs_a_licence(checkpoint, tmp_path):
    local = tmp_path / "local"
    shutil.copytree(checkpoint, local)
    write_json(local / "training_summary.json", {**read_json(local / "training_summary.json"), "base_model": None})
    with pytest.raises(ValueError, match=r"trained from a local folder.*pass --license"):
        push_model(local, "me/clipnd", dataset_id="me/m3el", dry_run_dir=tmp_path / "a")
    # A Hub base whose card cannot be read (offline here): the licence must be given.
    with pytest.raises(ValueError, match=r"licence of base model openai/clip-vit-base-patch32.*pass --license"):
        push_model(checkpoint, "me/clipnd", dataset_id="me/m3el", dry_run_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_hub_pipeline_call_runs_on_the_staged_folder(tiny_clip_path, tmp_path):
    """What the Hub's widget and "Use this model" run, on what push-model would upload, in a fresh interpreter."""
    from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
    from m3el_hf.modeling.processing import load_processor
    from m3el_hf.training.checkpoints import export

    final = tmp_path / "run" / "final"
    tokenizer, image_processor = load_processor(tiny_clip_path)
    export(CLIPNDModel.from_pretrained(tiny_clip_path), tokenizer, image_processor, final)
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    out = tmp_path / "staged"
    push_model(final, "me/clipnd", dataset_id="me/m3el", license="apache-2.0", dry_run_dir=out)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before  # the checkpoint itself is untouched
    staged = json.loads((out / "config.json").read_text())
    assert staged["model_type"] == "clip" and "clipnd" in staged and (out / "processor_config.json").is_file()
    card = ModelCard.load(out / "README.md")
    code = (
        "import sys\nfrom PIL import Image\nfrom transformers import pipeline\n"
        f"linker = pipeline({card.data.pipeline_tag!r}, model={str(out)!r})\n"
        "ranked = linker(Image.new('RGB', (48, 40), 'red'), candidate_labels=['a : b', 'c : d'])\n"
        "assert not any(name.startswith('m3el_hf') for name in sys.modules)\n"
        "print(sorted(item['label'] for item in ranked))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['a : b', 'c : d']" and card.data.library_name == "transformers"


def test_a_checkpoint_without_results_is_staged_with_a_warning(checkpoint, tmp_path, caplog):
    out = tmp_path / "staged"
    push_model(checkpoint, "me/clipnd", license="mit", dry_run_dir=out)  # no --results, no --dataset-id
    assert "No --results: the model card holds no scores" in caplog.text
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and card.data.datasets is None
    assert "**Benchmark data:** not given" in card.text and not (out / ".eval_results").exists()
