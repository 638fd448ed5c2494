"""Ranking metrics: hand-computed values, exact tie expectations, a brute-force reference, the evaluate module."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from m3el_hf.evaluation import metrics
from m3el_hf.evaluation.metrics import (
    accuracy_at_1,
    evaluate_module_path,
    gold_ranks,
    hits_at_k,
    mean_rank,
    metrics_from_counts,
    mrr,
    ranking_metrics,
    tie_counts,
)

INF = math.inf
NAN = math.nan


def test_known_ranks_without_ties():
    # mention 0: 0.9 > 0.5 = gold                      -> rank 2
    # mention 1: 3 > 2 > 1 > 0 = gold                  -> rank 4
    # mention 2: gold = 0.2 is the best                -> rank 1
    scores = [[0.1, 0.9, 0.5], [3.0, 2.0, 1.0, 0.0], [0.2, 0.1]]
    gold = [2, 3, 0]
    for ties in ("expected", "pessimistic"):
        assert gold_ranks(scores, gold, ties=ties).tolist() == [2.0, 4.0, 1.0]
        assert ranking_metrics(scores, gold, ties=ties) == {
            "accuracy": pytest.approx(1 / 3),  # rank 1 once
            "hits@1": pytest.approx(1 / 3),
            "hits@3": pytest.approx(2 / 3),  # ranks 2 and 1
            "hits@5": 1.0,
            "mrr": pytest.approx((1 / 2 + 1 / 4 + 1) / 3),  # = 0.58333...
            "mr": pytest.approx((2 + 4 + 1) / 3),
            "count": 3,
        }


def test_gold_tied_with_one_other_at_the_top():
    # g = 0 above, t = 1 tied: rank 1 or 2 with probability 1/2 each.
    scores, gold = [[0.7, 0.7, 0.1]], [0]
    assert accuracy_at_1(scores, gold) == 0.5
    assert accuracy_at_1(scores, gold, ties="pessimistic") == 0.0
    assert gold_ranks(scores, gold).tolist() == [1.5]
    assert gold_ranks(scores, gold, ties="pessimistic").tolist() == [2.0]
    assert mrr(scores, gold) == 0.75  # (1/1 + 1/2) / 2
    assert mrr(scores, gold, ties="pessimistic") == 0.5


def test_two_above_and_two_tied():
    # gold = 0.5 at index 3; g = 2 (0.9, 0.8) above; t = 2 (indices 2, 4) tied.
    # Expected: rank uniform on {3, 4, 5}. hits@1 = 0, hits@3 = clip(3-2, 0, 3)/3 = 1/3, hits@5 = 1,
    # rr = (1/3 + 1/4 + 1/5) / 3 = 47/180, expected rank = 1 + 2 + 2/2 = 4.
    # Pessimistic: rank 5. hits@3 = 0, hits@5 = 1, rr = 1/5.
    scores, gold = np.array([[0.9, 0.8, 0.5, 0.5, 0.5, 0.1]]), np.array([3])
    assert ranking_metrics(scores, gold) == {
        "accuracy": 0.0,
        "hits@1": 0.0,
        "hits@3": pytest.approx(1 / 3),
        "hits@5": 1.0,
        "mrr": pytest.approx(47 / 180),
        "mr": 4.0,
        "count": 1,
    }
    assert ranking_metrics(scores, gold, ties="pessimistic") == {
        "accuracy": 0.0,
        "hits@1": 0.0,
        "hits@3": 0.0,
        "hits@5": 1.0,
        "mrr": pytest.approx(1 / 5),
        "mr": 5.0,
        "count": 1,
    }
    assert gold_ranks(scores, gold).tolist() == [4.0]
    assert hits_at_k(scores, gold, 4) == pytest.approx(2 / 3)  # ranks 3 and 4 of {3, 4, 5}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
def test_constant_scorer_gets_exactly_chance(n):
    # Every candidate scores the same, gold at every position: accuracy 1/n, Hits@k = min(k, n)/n,
    # MRR = H_n / n under "expected"; nothing is right under "pessimistic" unless n == 1.
    scores = np.full((n, n), 0.3, dtype=np.float32)
    gold = np.arange(n)
    expected = ranking_metrics(scores, gold, ks=(1, 3))
    assert expected["accuracy"] == 1 / n
    assert expected["hits@3"] == min(3, n) / n
    assert expected["mrr"] == pytest.approx(sum(1 / j for j in range(1, n + 1)) / n, rel=1e-12)
    assert gold_ranks(scores, gold).tolist() == [(n + 1) / 2] * n
    assert expected["mr"] == mean_rank(scores, gold) == (n + 1) / 2
    pessimistic = ranking_metrics(scores, gold, ks=(1, 3), ties="pessimistic")
    assert pessimistic["accuracy"] == (1.0 if n == 1 else 0.0)
    assert pessimistic["mrr"] == pytest.approx(1 / n)
    assert pessimistic["mr"] == n


def test_unscorable_gold_is_ranked_last():
    # gold -inf while 0.1 is scorable: rank 3 of 3 under both policies, even though index 2 is
    # also -inf (no credit for tying with another failure). NaN gold behaves the same.
    for gold_score in (-INF, NAN):
        scores = [[gold_score, 0.1, -INF]]
        for ties in ("expected", "pessimistic"):
            assert gold_ranks(scores, [0], ties=ties).tolist() == [3.0]
            assert mrr(scores, [0], ties=ties) == pytest.approx(1 / 3)


def test_all_unscorable_is_chance():
    # Nothing could be scored: the gold ties with all 3 candidates -> accuracy 1/3 (expected), 0 (pessimistic).
    scores = [[-INF, NAN, -INF]]
    assert accuracy_at_1(scores, [1]) == pytest.approx(1 / 3)
    assert accuracy_at_1(scores, [1], ties="pessimistic") == 0.0
    assert mrr(scores, [1]) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_unscorable_candidates_never_tie_a_scored_gold():
    # NaN is read as -inf: both are below a finite gold, so the gold is first outright.
    assert gold_ranks([[0.5, NAN, -INF, 0.7]], [0]).tolist() == [2.0]
    assert gold_ranks([[NAN, 0.5, -INF]], [1], ties="pessimistic").tolist() == [1.0]


def _reference(row: list[float], gold: int, ks: tuple[int, ...]) -> dict[str, Fraction]:
    """Average over every tie-breaking permutation (exact fractions), written without tie counts."""
    score = [-INF if math.isnan(s) else s for s in row]
    unscorable_gold = score[gold] == -INF and any(s > -INF for s in score)
    # An unscorable gold sits in a tier below everything else whenever something else was scored.
    key = [(0 if (c == gold and unscorable_gold) else 1, s) for c, s in enumerate(score)]
    perms = list(itertools.permutations(range(len(row))))
    ranks = []
    for perm in perms:  # perm[c] is candidate c's random tie-breaker
        order = sorted(range(len(row)), key=lambda c: (key[c][0], key[c][1], -perm[c]), reverse=True)
        ranks.append(order.index(gold) + 1)
    out = {f"hits@{k}": Fraction(sum(r <= k for r in ranks), len(perms)) for k in ks}
    out["mrr"] = sum(Fraction(1, r) for r in ranks) / len(perms)
    out["rank"] = Fraction(sum(ranks), len(perms))
    out["pessimistic_rank"] = 1 + sum(key[c] >= key[gold] for c in range(len(row)) if c != gold)
    return out


def _random_ragged(seed: int, n_mentions: int = 60) -> tuple[list[list[float]], list[int]]:
    rng = np.random.default_rng(seed)
    values = np.array([0.0, 1.0, 2.0, -INF, NAN])  # few values, so ties and unscorables are common
    rows = [rng.choice(values, size=rng.integers(1, 6)).tolist() for _ in range(n_mentions)]
    return rows, [int(rng.integers(0, len(r))) for r in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variable_length_lists_match_brute_force_reference(seed):
    rows, gold = _random_ragged(seed)
    ks = (1, 2, 3)
    refs = [_reference(r, g, ks) for r, g in zip(rows, gold, strict=True)]
    got = ranking_metrics(rows, gold, ks=ks)
    for k in ks:
        assert got[f"hits@{k}"] == pytest.approx(float(sum(r[f"hits@{k}"] for r in refs) / len(refs)))
    assert got["mrr"] == pytest.approx(float(sum(r["mrr"] for r in refs) / len(refs)))
    # MR: the mean of the rank averaged over every tie-break permutation, exactly (half-integers are exact).
    assert got["mr"] == float(sum(r["rank"] for r in refs) / len(refs))
    pessimistic = sum(r["pessimistic_rank"] for r in refs) / len(refs)
    assert ranking_metrics(rows, gold, ks=ks, ties="pessimistic")["mr"] == pytest.approx(pessimistic, rel=1e-15)
    assert got["count"] == len(rows)
    # Row by row too, so one mention's error cannot hide behind another's.
    for row, g, ref in zip(rows, gold, refs, strict=True):
        assert hits_at_k([row], [g], 2) == pytest.approx(float(ref["hits@2"]))
        assert mrr([row], [g]) == pytest.approx(float(ref["mrr"]))
        assert mean_rank([row], [g]) == float(ref["rank"])
        assert gold_ranks([row], [g], ties="pessimistic").tolist() == [ref["pessimistic_rank"]]


def test_input_types_and_chunking_agree(monkeypatch):
    rows, gold = _random_ragged(3, n_mentions=40)
    want = ranking_metrics(rows, gold)
    as_arrays = [np.asarray(r, dtype=np.float32) for r in rows]
    as_tensors = [torch.tensor(r, dtype=torch.float64) for r in rows]
    assert ranking_metrics(as_arrays, np.asarray(gold)) == want
    assert ranking_metrics(as_tensors, torch.tensor(gold)) == want
    assert ranking_metrics(np.array(as_arrays, dtype=object), gold) == want
    # Tiny chunks exercise every block boundary, for ragged and dense input alike.
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7)
    assert ranking_metrics(rows, gold) == want
    dense = np.random.default_rng(0).integers(0, 4, size=(23, 9)).astype(np.float32)
    dense_gold = np.random.default_rng(1).integers(0, 9, size=23)
    chunked = ranking_metrics(dense, dense_gold)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1 << 20)
    assert chunked == ranking_metrics(dense, dense_gold)
    assert chunked == ranking_metrics(torch.from_numpy(dense).bfloat16(), torch.from_numpy(dense_gold))
    assert chunked == ranking_metrics(list(dense), dense_gold)


def test_mean_rank_matches_every_tie_break_of_constant_blocks():
    # g candidates above the gold, t others tied with it: average the gold's rank over every random tie-breaker.
    for g, t, below in [(0, 0, 2), (0, 3, 0), (2, 2, 1), (1, 4, 2), (3, 0, 0)]:
        row = [2.0] * g + [1.0] * (t + 1) + [0.0] * below
        gold = g + t // 2
        ranks = []
        for perm in itertools.permutations(range(len(row))):  # perm[c] is candidate c's tie-breaker
            ranks.append(sorted(range(len(row)), key=lambda c: (-row[c], perm[c])).index(gold) + 1)
        assert mean_rank([row], [gold]) == sum(ranks) / len(ranks) == g + (t + 2) / 2
        assert mean_rank([row], [gold], ties="pessimistic") == max(ranks) == g + t + 1


def test_metrics_from_counts_taken_in_blocks_equal_the_whole():
    rows, gold = _random_ragged(4, n_mentions=50)
    counts = [tie_counts(rows[i : i + 7], gold[i : i + 7]) for i in range(0, len(rows), 7)]
    greater, tied = (np.concatenate(parts) for parts in zip(*counts, strict=True))
    for ties in ("expected", "pessimistic"):
        assert metrics_from_counts(greater, tied, ties=ties) == ranking_metrics(rows, gold, ties=ties)


def test_no_mentions():
    out = ranking_metrics([], [])
    assert out["count"] == 0
    assert math.isnan(out["accuracy"]) and math.isnan(out["mrr"]) and math.isnan(out["mr"])


@pytest.mark.parametrize(
    ("scores", "gold", "match"),
    [
        ([[0.1, 0.2], [0.3, 0.4, 0.5]], [1, 5], r"gold index 5 of mention 1 is out of range: .* 3 candidates"),
        ([[0.1, 0.2]], [-1], r"gold index -1 of mention 0 is out of range"),
        ([[0.1], []], [0, 0], r"gold index 0 of mention 1 is out of range: that mention has 0 candidates"),
        (np.zeros((2, 3)), [0, 1, 2], r"`scores` has 2 mentions but `gold` has 3"),
        (np.zeros(3), [0, 1, 2], r"2-D \(mentions, candidates\) matrix .* got shape \(3,\)"),
        ([[0.1], [[0.1, 0.2]]], [0, 0], r"scores\[1\] must be a 1-D vector .* got shape \(1, 2\)"),
        ([[0.1], [0.1, [1.0, 2.0]]], [0, 0], r"scores\[1\] is not a vector of candidate scores"),
        (np.zeros((2, 3)), [0.0, 1.0], r"integer candidate indices, got dtype float64"),
        (np.zeros((2, 3)), [[0, 1]], r"1-D vector of candidate indices, got shape \(1, 2\)"),
        ([["a", "b"]], [0], r"real-valued scores, got dtype <U1"),
    ],
)
def test_invalid_inputs_raise(scores, gold, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics(scores, gold)


def test_invalid_options_raise():
    with pytest.raises(ValueError, match=r"`ties` must be one of \('pessimistic', 'expected'\), got 'optimistic'"):
        ranking_metrics([[1.0]], [0], ties="optimistic")
    with pytest.raises(ValueError, match=r"k must be a positive integer, got 0"):
        hits_at_k([[1.0]], [0], 0)


def test_evaluate_module_matches_plain_function(monkeypatch, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    path = evaluate_module_path()
    assert (Path(path) / "m3el_ranking.py").is_file()
    metric = evaluate.load(path, cache_dir=str(tmp_path), keep_in_memory=True)
    rows, gold = _random_ragged(4)
    # The module stores scores as float32; these values are exact in float32.
    for ties in ("expected", "pessimistic"):
        got = metric.compute(scores=rows, gold=gold, ks=(1, 2, 3), ties=ties)
        assert got == ranking_metrics(rows, gold, ks=(1, 2, 3), ties=ties)
    metric.add_batch(scores=rows[:10], gold=gold[:10])
    metric.add_batch(scores=rows[10:], gold=gold[10:])
    assert metric.compute() == ranking_metrics(rows, gold)
