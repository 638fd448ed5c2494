"""Degraded entity text (``evaluate --entity-text``): each variant's descriptions and the texts actually encoded."""

from __future__ import annotations

import datasets
import pytest

from m3el_hf.evaluation.entity_text import EntityTextVariant
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.modeling.encoders import Encoders
from m3el_hf.modeling.templates import TextTemplates

TOPICS = ("movies", "books")  # those of the `release` fixture (conftest.py)
ENTITIES = [(f"Q{i}", " ".join(f"w{i}x{j}" for j in range(i % 5))) for i in range(40)] + [("Q99", "w1x0")]
DISTINCT = [(f"Q{i}", f"description number {i}") for i in range(40)]


def test_name_and_truncate_keep_the_first_words():
    assert set(EntityTextVariant("name").descriptions(ENTITIES).values()) == {""}
    truncated = EntityTextVariant("truncate:2").descriptions(ENTITIES)
    for (qid, description), new in truncated.items():
        assert new == " ".join(description.split()[:2]), qid
    assert EntityTextVariant("truncate:9").descriptions(ENTITIES) == {key: key[1] for key in ENTITIES}


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_drop_removes_exactly_the_seeded_share(share):
    got = EntityTextVariant(f"drop:{share}").descriptions(DISTINCT)
    removed = [key for key, new in got.items() if new != key[1]]
    assert len(removed) == round(share * len(DISTINCT)) and all(got[key] == "" for key in removed)
    assert EntityTextVariant(f"drop:{share}").descriptions(reversed(DISTINCT)) == got  # row order does not matter
    if 0 < share < 1:
        assert EntityTextVariant(f"drop:{share}", seed=1).descriptions(DISTINCT) != got


def test_shuffle_is_a_seeded_derangement_of_the_descriptions():
    got = EntityTextVariant("shuffle").descriptions(DISTINCT)
    assert sorted(got.values()) == sorted(d for _, d in DISTINCT)  # the same descriptions, moved
    assert all(new != description for (_, description), new in got.items())  # none keeps its own
    assert EntityTextVariant("shuffle").descriptions(reversed(DISTINCT)) == got
    assert EntityTextVariant("shuffle", seed=5).descriptions(DISTINCT) != got
    assert EntityTextVariant("shuffle").descriptions([("Q1", "alone")]) == {("Q1", "alone"): "alone"}


@pytest.mark.parametrize("spec", ["", "full:1", "truncate:-1", "truncate:x", "drop:1.5", "drop:", "shuffle:2"])
def test_a_bad_variant_is_refused(spec):
    with pytest.raises(ValueError, match="--entity-text must be full, name, truncate:N"):
        EntityTextVariant(spec)


@pytest.mark.parametrize("spec", ["full", "name", "truncate:3", "drop:0.5", "shuffle"])
def test_the_texts_encoded_are_the_variants(model, processors, instances, release, monkeypatch, spec):
    kb = datasets.concatenate_datasets([datasets.load_dataset(str(release), f"{t}-kb", split="kb") for t in TOPICS])
    encoded: list[str] = []
    texts = Encoders.texts

    def record(self, batch):
        encoded.extend(batch)
        return texts(self, batch)

    monkeypatch.setattr(Encoders, "texts", record)
    result = evaluate_model(
        model,
        *processors,
        instances,
        kb=kb,
        tasks=("T-T",),
        protocols=("candidates", "kb"),
        entity_text=spec,
        progress=False,
    )
    templates = TextTemplates.of(model.config)
    entities = {(c["qid"], c["name"], c["description"] or "") for row in instances["candidates"] for c in row}
    entities |= {(q, n, d or "") for q, n, d in zip(kb["qid"], kb["name"], kb["description"], strict=True)}
    descriptions = EntityTextVariant(spec).descriptions((qid, d) for qid, _, d in entities)
    want = {templates.entity_text({"name": n, "description": descriptions[qid, d]}) for qid, n, d in entities}
    mentions = {templates.mention_text(m, s) for m, s in zip(instances["mention"], instances["sentence"], strict=True)}
    assert set(encoded) == want | mentions
    assert {r["entity_text"] for r in result.records} == {spec}
    assert f"entity text {spec!r}" in result.table()
    if spec == "full":
        assert want == {templates.entity_text({"name": n, "description": d}) for _, n, d in entities}
