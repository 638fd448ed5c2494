"""Approximate FAISS indexes: how wide they search, and the recall that width buys against exact search.

An IVF index visits `nprobe` of its lists per query, an HNSW index keeps `efSearch` candidates while it walks
its graph: the wider, the closer to exact search and the slower. `EntityIndex.build` measures recall@10 against
exact search on mention queries (held out: mentions are not entities, and an entity asked for itself is the
easiest query there is) and, unless told a width, takes the narrowest that reaches `RECALL_TARGET`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .checks import import_faiss

__all__ = ["KNOBS", "RECALL_TARGET", "knob_of", "recall_at_k", "set_search", "tune"]

RECALL_TARGET = 0.95
"""Recall@10 against exact search that the width `tune` picks must reach on the queries it is given."""
KNOBS = {"nprobe": "IVF", "efSearch": "HNSW"}
"""Each width parameter FAISS sets by name, and the kind of index it belongs to."""
_FIRST = {"nprobe": 1, "efSearch": 16}
_MOST_EF_SEARCH = 4096
_GAIN = 1e-3


def knob_of(searcher: Any) -> str | None:
    """The width parameter of `searcher`'s kind (``nprobe`` for IVF, ``efSearch`` for HNSW), or None (exact)."""
    faiss = import_faiss()
    index = faiss.downcast_index(searcher)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexIVF):
        return "nprobe"
    if isinstance(index, faiss.IndexHNSW):
        return "efSearch"
    return None


def set_search(searcher: Any, params: Mapping[str, int], factory: str) -> None:
    """Set `params` (``{"nprobe": 8}`` or ``{"efSearch": 64}``) on `searcher`, refusing one its kind lacks."""
    knob = knob_of(searcher)
    for name, value in params.items():
        if name != knob:
            has = f"its width is {knob}" if knob else "it is exact and has no width to set"
            raise ValueError(f"{name} is for {KNOBS.get(name, 'other')} indexes; the index is {factory!r}: {has}.")
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        import_faiss().ParameterSpace().set_index_parameter(searcher, name, value)


def recall_at_k(searcher: Any, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-`k` (inner product over `vectors`) that `searcher` returns for `queries`."""
    k = min(k, len(vectors))
    if not len(queries) or not k:
        return 1.0
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]
    _, found = searcher.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact.tolist(), found.tolist(), strict=True)]))


def tune(searcher: Any, vectors: np.ndarray, queries: np.ndarray, factory: str) -> tuple[dict[str, int], float]:
    """The narrowest width (doubling from 1 list, or 16 candidates) whose recall@10 on `queries` reaches
    `RECALL_TARGET`, set on `searcher`, and its recall; where none does, the width past which recall stops
    growing (IVF reaches exact search at all its lists; HNSW levels off below it on some data)."""
    knob = knob_of(searcher)
    if knob is None:
        return {}, recall_at_k(searcher, vectors, queries)
    most = import_faiss().extract_index_ivf(searcher).nlist if knob == "nprobe" else _MOST_EF_SEARCH
    best: tuple[int, float] | None = None
    for width in (min(_FIRST[knob] * 2**i, most) for i in itertools.count()):
        set_search(searcher, {knob: width}, factory)
        recall = recall_at_k(searcher, vectors, queries)
        if best is not None and recall <= best[1] + _GAIN:
            break  # twice the width bought nothing
        best = (width, recall)
        if recall >= RECALL_TARGET or width == most:
            break
    set_search(searcher, {knob: best[0]}, factory)
    return {knob: best[0]}, best[1]
