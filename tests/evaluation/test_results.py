"""results: evaluation records written to JSON and read back, and their accuracy tables (and the plot of them)."""

from __future__ import annotations

import json
import math

from PIL import Image

from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.plots import plot_accuracy
from m3el_hf.evaluation.results import RECORD_KEYS, format_table, read_results, write_results


def test_results_round_trip_table_and_plot(model, processors, damaged, tmp_path):
    result = evaluate_model(
        model, *processors, damaged, progress=False, model_name="CLIP_ND", checkpoint="ckpt", split="train"
    )
    assert all(tuple(record) == RECORD_KEYS for record in result.records)
    path = write_results(tmp_path / "results.json", [result], dataset="m3el")
    payload = json.loads(path.read_text())
    assert payload["dataset"] == "m3el" and payload["ties"] == "expected"
    empty = [r for r in payload["records"] if r["evaluated"] == 0]
    assert empty and all(r["accuracy"] is None and r["mrr"] is None for r in empty)
    back = read_results(path)
    assert len(back) == len(result.records)
    for mine, theirs in zip(result.records, back, strict=True):
        for key, value in mine.items():
            assert value == theirs[key] or (math.isnan(value) and math.isnan(theirs[key])), key
    assert not math.isnan(result.mean_accuracy()) and not math.isnan(result.mean_accuracy(topic="books"))
    assert "protocol 'candidates'" in result.table() and "books" in result.table()
    assert "CLIP_ND" in format_table(back)
    png = plot_accuracy(back, tmp_path / "plots" / "accuracy.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
