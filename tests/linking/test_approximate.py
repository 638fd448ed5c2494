"""Approximate indexes: the search width is chosen at build for recall on mention queries, stored, and set at link."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3el_hf.cli import main
from m3el_hf.linking import EntityIndex
from m3el_hf.linking.approximate import RECALL_TARGET, recall_at_k, set_search, tune
from m3el_hf.linking.checks import import_faiss


def _clustered(count: int, dim: int = 16, centres: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `centres` random centres, and 200 noisier copies of some of them as queries."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim))
    vectors = middle[rng.integers(centres, size=count)] + 0.3 * rng.normal(size=(count, dim))
    queries = vectors[rng.integers(count, size=200)] + 0.5 * rng.normal(size=(200, dim))
    unit = [(v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for v in (vectors, queries)]
    return unit[0], unit[1]


@pytest.mark.parametrize(("factory", "knob"), [("IVF64,Flat", "nprobe"), ("HNSW4", "efSearch")])
def test_tune_takes_the_narrowest_width_that_reaches_the_target(factory, knob):
    faiss = import_faiss()
    vectors, queries = _clustered(5000)
    searcher = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # HNSW's graph, built by several threads, differs from run to run
    try:
        searcher.train(vectors)
        searcher.add(vectors)
    finally:
        faiss.omp_set_num_threads(threads)
    params, recall = tune(searcher, vectors, queries, factory)
    assert list(params) == [knob] and recall >= RECALL_TARGET
    assert recall == recall_at_k(searcher, vectors, queries)  # the width is left set
    set_search(searcher, {knob: params[knob] // 2}, factory)
    assert recall_at_k(searcher, vectors, queries) < RECALL_TARGET <= recall  # half the width falls short
    with pytest.raises(ValueError, match=rf"^{'efSearch' if knob == 'nprobe' else 'nprobe'} is for"):
        set_search(searcher, {"efSearch" if knob == "nprobe" else "nprobe": 4}, factory)


def test_index_build_measures_recall_on_mentions_and_link_sets_the_width(
    tiny_clip_path, movies_release, tmp_path, capsys
):
    out = tmp_path / "ivf"
    build = ["-q", "index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release)]
    assert main([*build, "--config", "movies-kb", "--out", str(out), "--factory", "IVF4,Flat", "--modality", "T"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "index.json").read_text())
    assert meta["recall_queries"] == "40 mentions" and "on 40 mentions, with {'nprobe':" in printed
    assert meta["recall@10"] >= RECALL_TARGET and 1 <= meta["search"]["nprobe"] <= 4
    index = EntityIndex.load(out)
    ivf = import_faiss().extract_index_ivf(index.searcher)
    assert ivf.nprobe == meta["search"]["nprobe"]  # the stored width, not FAISS's default of 1
    index.set_search(nprobe=4)
    assert ivf.nprobe == 4 and index.recall_against_exact() == 1.0  # every list: exact
    link = ["-q", "link", "--model", str(tiny_clip_path), "--index", str(out), "--mention", "Paris"]
    assert main([*link, "--nprobe", "2"]) == 0
    assert main([*link, "--ef-search", "32"]) == 2
    assert "efSearch is for HNSW indexes; the index is 'IVF4,Flat': its width is nprobe." in capsys.readouterr().err
    assert main([*build, "--config", "movies-kb", "--out", str(tmp_path / "x"), "--nprobe", "2"]) == 2
    assert "nprobe is for IVF indexes; the index is 'Flat': it is exact" in capsys.readouterr().err
