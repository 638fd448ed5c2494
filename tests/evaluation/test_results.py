"""results: evaluation records written to JSON and read back, and their accuracy tables (and the plot of them)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math

import pytest
from PIL import Image

import m3el_hf
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.plots import plot_accuracy
from m3el_hf.evaluation.results import RECORD_KEYS, add_overall, format_table, read_results, write_results
from m3el_hf.json_files import FormatVersionError
from m3el_hf.provenance import Provenance, make_provenance


def test_results_round_trip_table_and_plot(model, processors, damaged, tmp_path):
    result = evaluate_model(
        model, *processors, damaged, progress=False, model_name="CLIP_ND", checkpoint="ckpt", split="train"
    )
    assert all(tuple(record) == RECORD_KEYS for record in result.records)
    provenance = make_provenance("builtin", str(tmp_path), None, synthetic=True)  # a folder of no shards
    path = write_results(tmp_path / "results.json", [result], provenance)
    payload = json.loads(path.read_text())
    assert payload["format_version"] == 1 and payload["dataset"] == str(tmp_path) and payload["ties"] == "expected"
    assert payload["synthetic"] is True and Provenance.from_dict(payload["provenance"]) == provenance
    assert payload["provenance"]["harness"] == "builtin" and payload["provenance"]["local"] is True
    assert payload["provenance"]["dataset_revision"] == "sha256:" + hashlib.sha256().hexdigest()
    assert payload["provenance"]["versions"] == {
        "m3el-hf": m3el_hf.__version__,
        **{name: importlib.metadata.version(name) for name in ("transformers", "datasets", "torch")},
    }
    empty = [r for r in payload["records"] if r["evaluated"] == 0]
    assert empty and all(r["accuracy"] is None and r["mrr"] is None for r in empty)
    back = read_results(path)
    assert len(back) == len(result.records)
    for mine, theirs in zip(result.records, back, strict=True):
        for key, value in mine.items():
            assert value == theirs[key] or (math.isnan(value) and math.isnan(theirs[key])), key
    assert not math.isnan(result.mean_accuracy()) and not math.isnan(result.mean_accuracy(topic="books"))
    assert "protocol 'candidates'" in result.table() and "books" in result.table()
    # The mean rank is shown as a rank (lower is better), not as a percentage.
    ranks = result.table(("mr",))
    assert "mr (lower is better)" in ranks and "(%)" not in ranks
    some = next(r for r in result.records if r["evaluated"] and r["topic"] == "books")
    assert f"{some['mr']:.2f} ({some['evaluated']})" in ranks and some["mr"] >= 1
    assert "CLIP_ND" in format_table(back)
    png = plot_accuracy(back, tmp_path / "plots" / "accuracy.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def test_the_overall_record_averages_the_scored_topics_and_sums_the_counts() -> None:
    """Each topic weighs the same (MTEB's mean over subsets), whatever its size; an empty topic is left out."""

    def record(topic: str, accuracy: float, evaluated: int) -> dict:
        metrics = {key: accuracy for key in ("accuracy", "hits@1", "hits@3", "hits@5", "mrr", "mr")}
        return {"model": "m", "protocol": "candidates", "task": "T-T", "topic": topic, **metrics} | {
            "evaluated": evaluated,
            "excluded": 1,
            "leaked": 2,
            "seen": topic != "sports",
        }

    topics = [record("movies", 0.9, 100), record("books", 0.3, 2), record("sports", math.nan, 0)]
    out = add_overall(topics)
    assert [r["topic"] for r in out] == ["movies", "books", "sports", "all"]
    overall = out[-1]
    assert overall["accuracy"] == overall["mrr"] == (0.9 + 0.3) / 2  # not the mention-weighted 0.888
    assert (overall["evaluated"], overall["excluded"], overall["leaked"]) == (102, 3, 6)
    assert math.isnan(add_overall([record("sports", math.nan, 0)])[-1]["accuracy"])
    # "all" is seen (or unseen) only when each of its topics is; a mix is neither.
    assert overall["seen"] is None and add_overall(topics[:2])[-1]["seen"] is True
    assert add_overall(topics[2:])[-1]["seen"] is False


def test_a_results_file_of_another_format_version_is_refused(model, processors, damaged, tmp_path):
    result = evaluate_model(model, *processors, damaged, tasks=("T-T",), progress=False)
    path = write_results(tmp_path / "results.json", [result], make_provenance("builtin", str(tmp_path), None, None))
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "format_version": 2}))
    with pytest.raises(FormatVersionError, match=rf"^{path} has format_version 2; this m3el-hf reads format_version 1"):
        read_results(path)
