"""Whole-KB ranking in chunks of mentions: exactly the metrics of the whole mentions × entities matrix."""

from __future__ import annotations

import datasets
import pytest
import torch

from m3el_hf.evaluation import evaluator, metrics
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.metrics import ranking_metrics

TOPICS = ("movies", "books")  # those of the `release` fixture (conftest.py)


@pytest.mark.parametrize("ties", ["expected", "pessimistic"])
@pytest.mark.parametrize("per_chunk", [1, 2, 3, 7])
def test_chunked_kb_ranking_equals_the_whole_matrix(monkeypatch, ties, per_chunk):
    # Small integer embeddings: every dot product is exact in float32, so ties are real ties. Entities 0-2 and
    # 5-6 repeat one another, unusable ones are scored -inf, and mentions repeat across chunk boundaries.
    generator = torch.Generator().manual_seed(0)
    entities = torch.randint(-2, 3, (12, 4), generator=generator).float()
    entities[1] = entities[2] = entities[0]
    entities[6] = entities[5]
    usable = torch.ones(12, dtype=torch.bool)
    usable[[3, 9]] = False
    base = torch.randint(-2, 3, (6, 4), generator=generator).float()
    mentions = base[torch.tensor([0, 1, 1, 2, 0, 3, 3, 3, 4, 5, 0, 2, 1])]
    gold = torch.tensor([0, 1, 2, 5, 6, 0, 4, 7, 8, 10, 11, 2, 6])
    monkeypatch.setattr(evaluator, "_KB_CHUNK_ELEMENTS", per_chunk * len(entities))
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 5)  # the chunks of a chunk, too
    whole = (mentions @ entities.T).masked_fill(~usable, float("-inf"))
    got = evaluator._rank_against(mentions, entities, usable, gold, ties)
    assert got == ranking_metrics(whole, gold, ks=(1, 3, 5), ties=ties)
    assert 0 < got["accuracy"] < 1 and got["mr"] > 1  # ties and misses both occur


def test_kb_records_do_not_depend_on_the_chunk_size(model, processors, instances, release, monkeypatch):
    kb = datasets.concatenate_datasets([datasets.load_dataset(str(release), f"{t}-kb", split="kb") for t in TOPICS])

    def records() -> list[dict]:
        result = evaluate_model(model, *processors, instances, kb=kb, protocols=("kb", "kb-leak-free"), progress=False)
        return result.records

    whole = records()  # the default chunk holds every mention of these small topics at once
    monkeypatch.setattr(evaluator, "_KB_CHUNK_ELEMENTS", 1)  # one mention per chunk
    chunked = records()
    assert [r["evaluated"] for r in whole] == [r["evaluated"] for r in chunked] and sum(r["evaluated"] for r in whole)
    assert repr(chunked) == repr(whole)  # every record, NaN cells included, to the last bit
