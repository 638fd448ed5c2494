"""EntityLinker: its scores give `m3el-hf evaluate`'s metrics on every task; link and link_batch rank by them."""

from __future__ import annotations

import datasets
import pytest
import torch

from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.metrics import ranking_metrics
from m3el_hf.linking import EntityIndex, EntityLinker, Mention
from m3el_hf.modeling.processing import load_processor
from m3el_hf.tasks import TASKS


@pytest.fixture(scope="module")
def linker(tiny_clip_path) -> EntityLinker:
    return EntityLinker.from_pretrained(tiny_clip_path, device="cpu")


@pytest.fixture(scope="module")
def rows(movies_release) -> datasets.Dataset:
    return datasets.load_dataset(str(movies_release), "movies", split="train").select(range(16))


@pytest.fixture(scope="module")
def kb_index(linker, movies_release) -> EntityIndex:
    kb = datasets.load_dataset(str(movies_release), "movies-kb", split="kb")
    return EntityIndex.build(linker, kb, modality="TI", progress=False)


def _candidates(row: dict) -> list[dict]:
    return [{**c, "image": image} for c, image in zip(row["candidates"], row["candidate_images"], strict=True)]


@pytest.mark.slow
def test_scores_give_the_evaluators_metrics_on_every_task(linker, rows, tiny_clip_path):
    result = evaluate_model(linker.model, *load_processor(tiny_clip_path), rows, progress=False)
    records = {r["task"]: r for r in result.records if r["topic"] == "movies"}
    for task in TASKS:
        scores, labels = [], []
        for row in rows:
            candidates = _candidates(row)
            query, ok = linker.embed_mentions(
                [Mention(row["mention"], row["sentence"], row["mention_image"])], task.mention
            )
            gold_has = task.entity == "T" or candidates[row["label"]]["image"] is not None
            if not (bool(ok[0]) and gold_has):
                continue
            embeddings, usable = linker.embed_entities(candidates, task.entity)
            scores.append((embeddings @ query[0]).masked_fill(~usable, float("-inf")))
            labels.append(row["label"])
        metrics = ranking_metrics(scores, torch.tensor(labels), ks=(1, 3, 5), ties="expected")
        assert len(labels) == records[task.name]["evaluated"], task.name
        for key in ("accuracy", "hits@3", "mrr"):
            assert metrics[key] == pytest.approx(records[task.name][key], abs=1e-9), (task.name, key)


def test_link_ranks_the_candidates_by_score_for_each_modality_pair(linker, rows):
    row = next(r for r in rows if r["mention_image"] is not None and all(i is not None for i in r["candidate_images"]))
    candidates = _candidates(row)
    for mention_modality in ("T", "I", "TI"):
        query, _ = linker.embed_mentions(
            [Mention(row["mention"], row["sentence"], row["mention_image"])], mention_modality
        )
        for entity_modality in ("T", "I", "TI"):
            embeddings, _ = linker.embed_entities(candidates, entity_modality)
            expected = (embeddings @ query[0]).tolist()
            found = linker.link(
                row["mention"],
                row["sentence"],
                row["mention_image"],
                candidates=candidates,
                top_k=len(candidates),
                mention_modality=mention_modality,
                entity_modality=entity_modality,
            )
            assert [e.rank for e in found] == list(range(1, len(candidates) + 1))
            assert [e.score for e in found] == sorted(expected, reverse=True)
            assert {e.qid for e in found} == {c["qid"] for c in candidates}
            assert all(e.image is not None for e in found)


def test_link_batch_equals_link_one_by_one_and_refuses_bad_calls(linker, rows):
    picked = [rows[i] for i in range(4)]
    mentions = [Mention(r["mention"], r["sentence"]) for r in picked]
    lists = [_candidates(r) for r in picked]
    batch = linker.link_batch(mentions, lists, top_k=3)
    single = [linker.link(m.mention, m.sentence, candidates=c, top_k=3) for m, c in zip(mentions, lists, strict=True)]
    assert [[(e.qid, round(e.score, 5)) for e in found] for found in batch] == [
        [(e.qid, round(e.score, 5)) for e in found] for found in single
    ]
    with pytest.raises(ValueError, match="either `candidates`"):
        linker.link("Paris")
    with pytest.raises(ValueError, match="The mention has no picture, which mention modality 'I' needs"):
        linker.link("Paris", candidates=lists[0], mention_modality="I")
    with pytest.raises(ValueError, match="Got 2 candidate lists for 4 mentions"):
        linker.link_batch(mentions, lists[:2])


def _approx(found: list) -> list:
    return [[(e.qid, pytest.approx(e.score, abs=1e-5)) for e in entities] for entities in found]


def test_a_mixed_batch_gives_each_mention_what_link_gives_it_alone(linker, rows, kb_index):
    picked = [r for r in rows if r["mention_image"] is not None][:8]
    mentions = [
        Mention(r["mention"], r["sentence"], r["mention_image"] if i % 2 else None) for i, r in enumerate(picked)
    ]
    lists = [_candidates(r) for r in picked]
    shared = [c for candidates in lists for c in candidates]
    alone = [
        linker.link(m.mention, m.sentence, m.image, candidates=c, top_k=3) for m, c in zip(mentions, lists, strict=True)
    ]
    assert _approx(linker.link_batch(mentions, lists, top_k=3)) == _approx(alone)
    alone = [linker.link(m.mention, m.sentence, m.image, candidates=shared, top_k=3) for m in mentions]
    assert _approx(linker.link_batch(mentions, shared, top_k=3)) == _approx(alone)
    alone = [linker.link(m.mention, m.sentence, m.image, index=kb_index, top_k=3) for m in mentions]
    assert _approx(linker.link_batch(mentions, index=kb_index, top_k=3)) == _approx(alone)
    with pytest.raises(ValueError, match=r"^Mention 0 has no picture, which mention modality 'TI' needs\.$"):
        linker.link_batch(mentions, lists, mention_modality="TI")
    with pytest.raises(ValueError, match=r"holds entity modality TI embeddings; entity modality T needs an index"):
        linker.link_batch(mentions, index=kb_index, entity_modality="T")


def test_each_distinct_candidate_is_embedded_once_per_call(linker, rows, monkeypatch):
    encoded = {"texts": 0, "images": 0}
    for kind in encoded:
        real = getattr(linker.encoders, kind)

        def counted(values, kind=kind, real=real):
            encoded[kind] += len(values)
            return real(values)

        monkeypatch.setattr(linker.encoders, kind, counted)
    shared = _candidates(rows[0])
    mentions = [Mention(r["mention"], r["sentence"]) for r in rows]
    found = linker.link_batch(mentions, shared, top_k=2)
    assert encoded == {"texts": len(mentions) + len(shared), "images": len(shared)}  # entity modality TI
    assert [[e.qid for e in f] for f in found] == [
        [e.qid for e in linker.link(m.mention, m.sentence, candidates=shared, top_k=2)] for m in mentions
    ]
    encoded.update(texts=0, images=0)
    lists = [_candidates(r) for r in rows]  # one list per mention; entities recur across them
    distinct = {(c["qid"], c["name"], c["description"]) for candidates in lists for c in candidates}
    linker.link_batch(mentions, lists, top_k=2)
    assert encoded["texts"] == len(mentions) + len(distinct) < len(mentions) + sum(map(len, lists))
