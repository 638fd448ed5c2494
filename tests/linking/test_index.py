"""EntityIndex: exact search equals exhaustive scoring; saved folders load back and with stock datasets."""

from __future__ import annotations

import json

import datasets
import pytest

from m3el_hf.json_files import FormatVersionError
from m3el_hf.linking import EntityIndex, EntityLinker, Mention


@pytest.fixture(scope="module")
def linker(tiny_clip_path) -> EntityLinker:
    return EntityLinker.from_pretrained(tiny_clip_path, device="cpu")


@pytest.fixture(scope="module")
def kb(movies_release) -> datasets.Dataset:
    return datasets.load_dataset(str(movies_release), "movies-kb", split="kb")


@pytest.fixture(scope="module")
def mentions(movies_release) -> list[Mention]:
    rows = datasets.load_dataset(str(movies_release), "movies", split="validation")
    return [Mention(r["mention"], r["sentence"], r["mention_image"]) for r in rows if r["mention_image"] is not None]


@pytest.mark.parametrize("modality", ["T", "TI"])
def test_exact_search_equals_exhaustive_scoring(linker, kb, mentions, modality):
    index = EntityIndex.build(linker, kb, modality=modality, batch_size=7, progress=False)
    with_input = [row for row in kb if modality == "T" or row["image"] is not None]
    assert (len(index), index.info["skipped"]) == (len(with_input), kb.num_rows - len(with_input))
    found = linker.link_batch(mentions, index=index, top_k=5)
    expected = linker.link_batch(mentions, with_input, top_k=5, entity_modality=modality)
    for got, want in zip(found, expected, strict=True):
        assert [e.qid for e in got] == [e.qid for e in want]
        assert [e.score for e in got] == pytest.approx([e.score for e in want], abs=1e-5)
        assert [e.rank for e in got] == [1, 2, 3, 4, 5]


def test_saved_index_loads_back_and_with_stock_datasets(linker, kb, mentions, tmp_path):
    index = EntityIndex.build(linker, kb, modality="TI", progress=False)
    folder = index.save(tmp_path / "index")
    meta = json.loads((folder / "index.json").read_text())
    assert meta["modality"] == "TI" and meta["entities"] == len(index) and meta["factory"] == "Flat"
    card = (folder / "README.md").read_text()
    assert f"`{linker.checkpoint}`" in card and "entity modality `TI`" in card
    stock = datasets.load_dataset(str(folder), split="train")
    assert stock.num_rows == len(index) and len(stock[0]["embeddings"]) == meta["dimension"]
    again = EntityIndex.load(folder)
    query = mentions[:3]
    assert [[e.qid for e in r] for r in linker.link_batch(query, index=again)] == [
        [e.qid for e in r] for r in linker.link_batch(query, index=index)
    ]
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        index.save(folder)
    with pytest.raises(FileNotFoundError, match=r"has no index\.json"):
        EntityIndex.load(tmp_path)
    assert meta["format_version"] == 1
    (folder / "index.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(FormatVersionError, match=r"index\.json has format_version 2; this m3el-hf reads"):
        EntityIndex.load(folder)


def test_an_approximate_index_reports_its_recall(linker, kb):
    index = EntityIndex.build(linker, kb, modality="T", factory="HNSW32", progress=False)
    assert 0.5 <= index.info["recall@10"] <= 1.0
    exact = EntityIndex.build(linker, kb, modality="T", progress=False)
    assert exact.recall_against_exact() == 1.0
