"""EntityIndex: exact search equals exhaustive scoring; saved folders load back and with stock datasets."""

from __future__ import annotations

import json

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from m3el_hf.json_files import FormatVersionError
from m3el_hf.linking import EntityIndex, EntityLinker, Mention
from m3el_hf.linking.index import FAISS_FILE
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.modeling.tiny import build_tiny_clip


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


def test_saved_index_loads_back_and_with_stock_datasets(linker, kb, mentions, tmp_path, monkeypatch):
    index = EntityIndex.build(linker, kb, modality="TI", progress=False)
    monkeypatch.setattr("m3el_hf.linking.storage.IMAGE_ROW_GROUP", 7)  # hits' images come from several row groups
    folder = index.save(tmp_path / "index")
    meta = json.loads((folder / "index.json").read_text())
    assert meta["modality"] == "TI" and meta["entities"] == len(index) and meta["factory"] == "Flat"
    assert meta["encoder"] == {k: v for k, v in linker.identity.items() if k not in ("checkpoint", "dimension")}
    assert (folder / FAISS_FILE).is_file()
    card = (folder / "README.md").read_text()
    assert f"`{linker.checkpoint}`" in card and "entity modality `TI`" in card
    cache = tmp_path / "cache"  # `datasets` keys its cache by folder name: another "index" folder's must not serve
    stock = datasets.load_dataset(str(folder), split="train", cache_dir=cache)
    assert stock.num_rows == len(index) and len(stock[0]["embeddings"]) == meta["dimension"]
    again = EntityIndex.load(folder)
    query = mentions[:3]
    found = linker.link_batch(query, index=again, top_k=len(index))
    expected = linker.link_batch(query, index=index, top_k=len(index))
    assert [[(e.qid, e.score, e.stored_image) for e in r] for r in found] == [
        [(e.qid, e.score, e.stored_image) for e in r] for r in expected
    ]
    assert np.array_equal(again.embeddings(), index.embeddings())
    copy = again.save(tmp_path / "copy")  # a loaded index saves the same rows and embeddings
    assert datasets.load_dataset(str(copy), split="train", cache_dir=cache).to_list() == stock.to_list()
    assert isinstance(stock[0]["image"], PIL.Image.Image)  # stock readers decode the images
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


def _stock_ranking(checkpoint, mentions, kb, modality, k=10):
    """Top-`k` (qid, score) of each mention against every KB entity, by stock `CLIPModel` on its own: the default
    templates written out, embeddings L2-normalised, text+image fused as the normalised sum (CLIP_ND's mean)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")

    def embed(texts, images):
        with torch.no_grad():
            tokens = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            text = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
            if modality == "T":
                return text
            pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
            image = torch.nn.functional.normalize(model.get_image_features(**pixels).pooler_output, dim=-1)
            return torch.nn.functional.normalize(text + image, dim=-1)

    queries = embed([f"{m.mention} : {m.sentence}" for m in mentions], [m.image for m in mentions])
    entities = embed([f"{e['name']} : {e['description']}" for e in kb], [e["image"] for e in kb])
    scores, rows = (queries @ entities.T).topk(k, dim=1)
    return [
        [(kb[int(r)]["qid"], float(s)) for r, s in zip(rr, ss, strict=True)]
        for rr, ss in zip(rows, scores, strict=True)
    ]


@pytest.mark.parametrize("modality", ["T", "TI"])
def test_a_saved_index_ranks_as_stock_clip_does(linker, kb, mentions, tiny_clip_path, tmp_path, modality):
    folder = EntityIndex.build(linker, kb, modality=modality, progress=False).save(tmp_path / "index")
    found = linker.link_batch(mentions, index=EntityIndex.load(folder), top_k=10, mention_modality=modality)
    expected = _stock_ranking(tiny_clip_path, mentions, kb, modality)
    for got, want in zip(found, expected, strict=True):
        assert [e.qid for e in got] == [qid for qid, _ in want]
        assert [e.score for e in got] == pytest.approx([score for _, score in want], abs=1e-5)


def test_an_index_refuses_another_checkpoints_mentions(linker, kb, mentions, tmp_path, caplog):
    folder = EntityIndex.build(linker, kb, modality="T", progress=False).save(tmp_path / "index")
    index = EntityIndex.load(folder)
    other = EntityLinker.from_pretrained(build_tiny_clip(tmp_path / "seed-1", seed=1), device="cpu")
    assert other.identity["dimension"] == linker.identity["dimension"]
    with pytest.raises(ValueError, match=rf"The index {folder} was built by .* \(weights sha256:"):
        other.link("Paris", index=index)
    with caplog.at_level("WARNING"):
        found = other.link("Paris", index=index, allow_other_checkpoint=True)
    assert len(found) == 5 and "linking with it anyway, as asked" in caplog.text
    same = EntityLinker.from_pretrained(str(linker.checkpoint), device="cpu")  # the same weights, loaded again
    assert same.identity == linker.identity
    model = CLIPNDModel.from_pretrained(linker.checkpoint, mention_template="{mention}")
    templated = EntityLinker(model, *load_processor(linker.checkpoint))
    with pytest.raises(ValueError, match=r"\(mention_template '\{mention\} : \{sentence\}' against '\{mention\}'\)"):
        templated.link("Paris", index=index)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("Bogus99", r"FAISS cannot build it for 16-dimensional embeddings \(could not parse index string Bogus99\)"),
        ("PQ5", r"\(The dimension of the vector \(d\) should be a multiple of the number of subquantizers \(M\)\)"),
        ("PQ4", r"'PQ4' needs at least 256 entities to train on, but there are 43 to index"),
        ("IVF8,PQ4", r"'IVF8,PQ4' needs at least 256 entities"),
        ("OPQ4,IVF64,Flat", r"'OPQ4,IVF64,Flat' needs at least 64 entities"),
    ],
)
def test_a_factory_is_checked_before_any_embedding(linker, kb, monkeypatch, factory, message):
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before checking the factory")

    monkeypatch.setattr(linker, "embed_entities", no_embedding)
    with pytest.raises(ValueError, match=message):
        EntityIndex.build(linker, kb, modality="T", factory=factory, progress=False)
