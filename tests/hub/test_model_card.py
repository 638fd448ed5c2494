"""model_card: the model card parses back with results, baselines and usage, and says when data was synthetic."""

from __future__ import annotations

import shutil

from huggingface_hub import DatasetCard, ModelCard

from m3el_hf.data.prepare import is_synthetic, read_report
from m3el_hf.hub.model_card import build_model_card
from m3el_hf.json_files import read_json, write_json


def test_a_synthetic_release_is_named_synthetic_from_synth_to_the_model_card(
    movies_release, checkpoint, records, tmp_path
):
    report = read_report(movies_release)
    assert report["synthetic"]["generator"] == "m3el-hf synth" and report["synthetic"]["instances"] == 40
    assert is_synthetic(movies_release) is True and is_synthetic("me/m3el") is None
    card = DatasetCard.load(movies_release / "README.md")
    assert card.data.pretty_name.startswith("Synthetic") and "synthetic" in card.data.tags
    assert "This is a synthetic release" in card.text
    # The model card learns it from what training recorded about its data (see test_training).
    summary = read_json(checkpoint / "training_summary.json")
    for recorded, flagged in ((True, True), (None, False), (False, False)):
        folder = tmp_path / f"ckpt-{recorded}"
        shutil.copytree(checkpoint, folder)
        summary["synthetic_data"] = recorded
        write_json(folder / "training_summary.json", summary)
        text = build_model_card(folder, records, repo_id="me/clipnd", dataset_id="me/m3el").text
        assert ("These scores come from a synthetic release" in text) is flagged


def test_model_card_parses_back_with_results_baselines_and_usage(checkpoint, records, tmp_path):
    card = build_model_card(
        checkpoint, records, repo_id="me/clipnd", dataset_id="me/m3el", license="mit", plot_path="x.png"
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    ours = [r for r in records if r["model"] == "CLIP_ND" and r["accuracy"] is not None]
    protocol_names = {"candidates": "Accuracy (candidate-list protocol)", "kb": "Accuracy (whole-KB protocol)"}
    got = {(e.dataset_config, e.metric_name): e.metric_value for e in loaded.data.eval_results}
    assert got == {(f"{r['topic']}-{r['task']}", protocol_names[r["protocol"]]): r["accuracy"] for r in ours}
    # The protocol is free text in the names; `config` is the metric's configuration, which accuracy has none of.
    assert {e.metric_config for e in loaded.data.eval_results} == {None}
    types = {e.dataset_config.split("-", 1)[1]: e.task_type for e in loaded.data.eval_results}
    assert types == {
        "T-T": "text-ranking",
        "I-T": "zero-shot-image-classification",
        "TI-T": "zero-shot-image-classification",
        "I-I": "image-feature-extraction",
        **{task: "visual-document-retrieval" for task in ("T-I", "TI-I", "T-TI", "I-TI", "TI-TI")},
    }
    assert {e.dataset_type for e in loaded.data.eval_results} == {"me/m3el"}
    assert loaded.data.base_model == "openai/clip-vit-base-patch32" and loaded.data.datasets == ["me/m3el"]
    assert loaded.data.license == "mit" and loaded.data.pipeline_tag == "zero-shot-image-classification"
    text = loaded.text
    for heading in (line for line in text.splitlines() if line.startswith("###")):
        assert "protocol" in heading, heading
    assert "| task | zero-shot CLIP | CLIP_ND (name only) | CLIP_ND |" in text
    assert "Trained on the topics movies; unseen in training: common, person, books, sports." in text
    assert "![" in text and "(accuracy.png)" in text
    assert 'CLIPNDModel.from_pretrained("me/clipnd")' in text
    assert 'pipeline("zero-shot-image-classification", model="me/clipnd")' in text
    assert "trust_remote_code" in text and "I-I" in text and "augment_description | True" in text
    assert "| T-I, TI-I, *-TI | `visual-document-retrieval` |" in text
    assert "| hardware | device_type: cpu, device_name: cpu, num_processes: 1, mixed_precision: no |" in text
    assert "/home/someone" not in text  # local paths stay local


def test_the_card_shows_the_mean_rank_beside_the_other_metrics(checkpoint, records):
    text = build_model_card(checkpoint, records, repo_id="me/clipnd", dataset_id="me/m3el").text
    row = next(
        r for r in records if (r["model"], r["protocol"], r["topic"], r["task"]) == ("CLIP_ND", "kb", "movies", "T-T")
    )
    expected = (
        f"| movies | T-T | {100 * row['accuracy']:.1f} | {100 * row['hits@1']:.1f} | {100 * row['hits@3']:.1f} | "
    )
    expected += f"{100 * row['hits@5']:.1f} | {100 * row['mrr']:.1f} | {row['mr']:.2f} | 4 | 0 | 0 |"
    kb_details = text.split("All metrics, CLIP_ND, protocol: kb</summary>")[1]
    assert "| topic | task | accuracy | hits@1 | hits@3 | hits@5 | mrr | mr | evaluated |" in kb_details
    assert expected in kb_details.split("</details>")[0] and "mr is the gold's mean rank" in kb_details
    # Results written before MR was measured have no column for it.
    older = [{k: v for k, v in r.items() if k != "mr"} for r in records]
    text = build_model_card(checkpoint, older, repo_id="me/clipnd", dataset_id="me/m3el").text
    assert "| mrr | evaluated |" in text and "| mr |" not in text
