"""Ranking metrics for entity linking: accuracy, Hits@k, MRR and mean rank of the gold candidate, with honest ties.

Every mention ranks its own candidates. `scores` is either a dense ``(mentions, candidates)`` matrix
(numpy or torch; whole-KB ranking included) or a list of 1-D score vectors of varying length (one
candidate list per mention); `gold` holds the gold candidate's index per mention.

A candidate that cannot be scored (e.g. its image is missing) is scored ``-inf``; ``NaN`` is read as
``-inf``. A gold scored ``-inf`` is ranked last, behind every other candidate, even unscorable ones:
a model earns nothing for failing to score the answer. Only when *every* candidate is unscorable is
the gold tied with all of them, which is worth chance.

Ties are resolved by one switch, ``ties``:

- ``"expected"`` (default): the expected value of the metric when ties are broken uniformly at
  random. With ``g`` candidates strictly above the gold and ``t`` others tied with it, the gold's
  rank is uniform on ``g+1 .. g+t+1``, so Hits@k is ``clip(k - g, 0, t + 1) / (t + 1)`` and the
  reciprocal rank is ``(H(g+t+1) - H(g)) / (t + 1)`` with ``H`` the harmonic numbers, and the rank is
  ``g + 1 + t/2``. A model that gives all ``n`` candidates one score gets exactly ``1/n`` accuracy, and
  mean rank ``(n + 1)/2``, wherever the gold sits.
- ``"pessimistic"``: every tied candidate is ranked above the gold (rank ``g + t + 1``), so ties count as errors.

The mean rank (MR, 1-based) is the one metric where lower is better.

All metrics are means over mentions, so per-shard results combine by a `count`-weighted mean.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import torch

__all__ = [
    "Ties",
    "accuracy_at_1",
    "evaluate_module_path",
    "gold_ranks",
    "hits_at_k",
    "mean_rank",
    "metrics_from_counts",
    "mrr",
    "ranking_metrics",
    "tie_counts",
]

Ties = Literal["pessimistic", "expected"]
Scores = Union[np.ndarray, "torch.Tensor", Sequence[ArrayLike]]
Gold = Union[np.ndarray, "torch.Tensor", Sequence[int]]

_TIES: tuple[str, ...] = ("pessimistic", "expected")
# Score elements handled per chunk: bounds memory for whole-KB matrices (M x 50k) at ~8 MB per
# temporary, while keeping every operation vectorised.
_CHUNK_ELEMENTS = 1 << 20
_EVALUATE_MODULE = Path(__file__).resolve().parent / "evaluate_metric" / "m3el_ranking"


def evaluate_module_path() -> str:
    """The folder of the bundled `evaluate` module, for ``evaluate.load(evaluate_module_path())``.

    The `evaluate` library is in maintenance mode; the module is a thin wrapper around
    `ranking_metrics` and nothing in m3el_hf depends on it.
    """
    if not (_EVALUATE_MODULE / "m3el_ranking.py").is_file():
        raise FileNotFoundError(
            f"The m3el_ranking evaluate module is missing from {_EVALUATE_MODULE}; this install of "
            "m3el_hf was built without its package data. Reinstall m3el-hf, or call "
            "`m3el_hf.evaluation.metrics.ranking_metrics` directly."
        )
    return str(_EVALUATE_MODULE)


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _is_tensor(x: object) -> bool:
    # torch is only looked up if the caller already imported it, so numpy users never pay for it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: object) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 has no numpy dtype
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_real(a: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        return a
    if np.issubdtype(a.dtype, np.integer) or a.dtype in (np.bool_, np.object_):
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{what} must hold real-valued scores, got dtype {a.dtype}.")


def _ragged(rows: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-mention score vectors into one array plus their lengths."""
    rows = list(rows)
    if all(type(r) is list for r in rows):
        # Fast path for plain nested lists (what `evaluate` hands over): no per-row array.
        try:
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=lengths.sum())
            return flat, lengths
        except (TypeError, ValueError):
            pass  # a nested or non-numeric row: the general path below names it
    if rows and all(_is_tensor(r) and r.ndim == 1 for r in rows):
        import torch  # already imported: the rows are tensors

        lengths = np.fromiter((r.shape[0] for r in rows), dtype=np.int64, count=len(rows))
        return _as_real(_to_numpy(torch.cat(rows)), "`scores`"), lengths
    arrays = []
    for i, row in enumerate(rows):
        try:
            a = row if isinstance(row, np.ndarray) else _to_numpy(row)
        except (TypeError, ValueError) as e:
            raise ValueError(f"scores[{i}] is not a vector of candidate scores: {e}") from None
        if a.ndim != 1:
            raise ValueError(f"scores[{i}] must be a 1-D vector of candidate scores, got shape {a.shape}.")
        arrays.append(a)
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    flat = _as_real(np.concatenate(arrays) if arrays else np.empty(0), "`scores`")
    return flat, lengths


def _check_gold(gold: Gold, n_candidates: np.ndarray) -> np.ndarray:
    g = _to_numpy(gold)
    if g.ndim != 1:
        raise ValueError(f"`gold` must be a 1-D vector of candidate indices, got shape {g.shape}.")
    if len(g) != len(n_candidates):
        raise ValueError(f"`scores` has {len(n_candidates)} mentions but `gold` has {len(g)}.")
    if g.size == 0:
        return g.astype(np.int64)
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"`gold` must hold integer candidate indices, got dtype {g.dtype}.")
    g = g.astype(np.int64)
    bad = np.flatnonzero((g < 0) | (g >= n_candidates))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"gold index {g[i]} of mention {i} is out of range: that mention has {n_candidates[i]} "
            f"candidates (expected 0 <= gold < {n_candidates[i]}); {bad.size} mention(s) in total "
            "have an out-of-range gold."
        )
    return g


def _chunks(scores: Scores, gold: Gold) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(scores, n_candidates, gold)`` for blocks of mentions; padding is ``NaN``."""
    dense = (_is_tensor(scores) or isinstance(scores, np.ndarray)) and scores.dtype != object
    if dense:
        if scores.ndim != 2:
            raise ValueError(
                "`scores` must be a 2-D (mentions, candidates) matrix or a list of 1-D score vectors, "
                f"got shape {tuple(scores.shape)}."
            )
        m, k = scores.shape
        lengths = np.full(m, k, dtype=np.int64)
    else:
        flat, lengths = _ragged(scores)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        k = int(lengths.max(initial=0))
    gold = _check_gold(gold, lengths)
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, len(gold), step):
        stop = min(start + step, len(gold))
        if dense:
            block = _as_real(_to_numpy(scores[start:stop]), "`scores`")
        else:
            n = lengths[start:stop]
            block = np.full((stop - start, int(n.max())), np.nan, dtype=flat.dtype)
            # Boolean-mask assignment fills row-major, which is the concatenation order.
            block[np.arange(block.shape[1]) < n[:, None]] = flat[offsets[start] : offsets[stop]]
        yield block, lengths[start:stop], gold[start:stop]


def _block_tie_counts(s: np.ndarray, n: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gs = np.take_along_axis(s, gold[:, None], axis=1)
    gs = np.where(np.isnan(gs), -np.inf, gs).astype(s.dtype)
    # NaN (unscorable, or padding) compares False both ways, so it never outranks or ties a
    # scorable gold; only an unscorable gold needs the fix-up below.
    greater = (s > gs).sum(axis=1)
    tied = (s == gs).sum(axis=1) - 1
    # An unscorable gold is last among the other n - 1, unless nothing could be scored at all
    # (then it ties with all of them, which is worth chance).
    lost = np.isneginf(gs[:, 0])
    last, chance = lost & (greater > 0), lost & (greater == 0)
    greater[last], tied[last] = n[last] - 1, 0
    tied[chance] = n[chance] - 1
    return greater, tied


def tie_counts(scores: Scores, gold: Gold) -> tuple[np.ndarray, np.ndarray]:
    """Per mention: how many candidates score strictly above the gold, and how many others tie it (int64).

    Every metric here is a function of these two counts (`metrics_from_counts`), so counts taken block by
    block (e.g. chunks of mentions) and concatenated give exactly the metrics of the whole matrix.

    >>> tie_counts([[0.9, 0.5, 0.9], [0.1, 0.7]], [0, 1])
    (array([0, 0]), array([1, 0]))
    """
    greater, tied = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for block, n, g in _chunks(scores, gold):
        gt, eq = _block_tie_counts(block, n, g)
        greater.append(gt)
        tied.append(eq)
    return np.concatenate(greater).astype(np.int64), np.concatenate(tied).astype(np.int64)


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise ValueError(f"`ties` must be one of {_TIES}, got {ties!r}.")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")


# ---------------------------------------------------------------------------------------------
# Metrics from tie counts
# ---------------------------------------------------------------------------------------------


def _hits(greater: np.ndarray, tied: np.ndarray, k: int, ties: Ties) -> float:
    """Mean Hits@k, rounded once per distinct number of ties.

    Per mention Hits@k is ``hits / (tied + 1)`` with an integer `hits`. Summing the integers per
    denominator before dividing means a constant scorer over n candidates gets ``1/n`` itself, not
    a sum of n rounded ``1/n`` terms.
    """
    if not greater.size:
        return float("nan")
    if ties == "pessimistic":
        return float(np.count_nonzero(greater + tied + 1 <= k)) / greater.size
    denominators, group = np.unique(tied + 1, return_inverse=True)
    numerators = np.bincount(group, weights=np.clip(k - greater, 0, tied + 1))
    return math.fsum(numerators / denominators) / greater.size


def _reciprocal_ranks(greater: np.ndarray, tied: np.ndarray, ties: Ties) -> np.ndarray:
    if ties == "pessimistic":
        return 1.0 / (greater + tied + 1)
    top = int((greater + tied).max(initial=0)) + 1
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    expected = (harmonic[greater + tied + 1] - harmonic[greater]) / (tied + 1)
    # Without ties the rank is exact; skip the harmonic difference so the value is bit-exact.
    return np.where(tied == 0, 1.0 / (greater + 1), expected)


def _ranks(greater: np.ndarray, tied: np.ndarray, ties: Ties) -> np.ndarray:
    spread = tied / 2 if ties == "expected" else tied
    return (1 + greater + spread).astype(np.float64)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def gold_ranks(scores: Scores, gold: Gold, ties: Ties = "expected") -> np.ndarray:
    """The gold candidate's 1-based rank per mention.

    Args:
        scores (`np.ndarray`, `torch.Tensor` or list of 1-D vectors):
            Candidate scores, a ``(mentions, candidates)`` matrix or one vector per mention; higher
            is better, ``-inf``/``NaN`` mark unscorable candidates.
        gold (`np.ndarray`, `torch.Tensor` or list of `int`):
            Index of the gold candidate per mention.
        ties (`str`, *optional*, defaults to `"expected"`):
            `"expected"` returns the expected rank under random tie-breaking (``1 + g + t/2``,
            possibly a half-integer); `"pessimistic"` ranks the gold below all ties (``1 + g + t``).

    Returns:
        `np.ndarray` of float64, one rank per mention.

    >>> gold_ranks([[0.9, 0.5, 0.9], [0.1, 0.7]], [0, 1]).tolist()
    [1.5, 1.0]
    """
    _check_ties(ties)
    return _ranks(*tie_counts(scores, gold), ties)


def hits_at_k(scores: Scores, gold: Gold, k: int, ties: Ties = "expected") -> float:
    """Fraction of mentions whose gold ranks in the top `k` (see `gold_ranks` for the arguments)."""
    _check_ties(ties)
    _check_k(k)
    return _hits(*tie_counts(scores, gold), k, ties)


def accuracy_at_1(scores: Scores, gold: Gold, ties: Ties = "expected") -> float:
    """Fraction of mentions whose gold ranks first, i.e. Hits@1 (see `gold_ranks` for the arguments)."""
    return hits_at_k(scores, gold, 1, ties=ties)


def mrr(scores: Scores, gold: Gold, ties: Ties = "expected") -> float:
    """Mean reciprocal rank of the gold; exact expectation under `"expected"` ties (see `gold_ranks`)."""
    _check_ties(ties)
    return _mean(_reciprocal_ranks(*tie_counts(scores, gold), ties))


def mean_rank(scores: Scores, gold: Gold, ties: Ties = "expected") -> float:
    """Mean 1-based rank of the gold (MR, lower is better): the mean of `gold_ranks` (see it for the arguments)."""
    _check_ties(ties)
    return _mean(_ranks(*tie_counts(scores, gold), ties))


def ranking_metrics(
    scores: Scores, gold: Gold, ks: Sequence[int] = (1, 3, 5), ties: Ties = "expected"
) -> dict[str, float | int]:
    """Accuracy, Hits@k for each k in `ks`, MRR, mean rank and the mention count, from one pass over `scores`.

    Args:
        scores, gold, ties: as in `gold_ranks`.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 3, 5)`):
            Cut-offs reported as ``"hits@{k}"``.

    Returns:
        `dict`: ``accuracy`` (== Hits@1), ``hits@{k}`` per k, ``mrr``, ``mr`` (mean rank, lower is better) and
        ``count`` (an `int`). Means are ``nan`` when there are no mentions.

    >>> ranking_metrics([[0.2, 0.9, 0.5], [1.0, 1.0]], [2, 0], ks=(1, 2))
    {'accuracy': 0.25, 'hits@1': 0.25, 'hits@2': 1.0, 'mrr': 0.625, 'mr': 1.75, 'count': 2}
    """
    return metrics_from_counts(*tie_counts(scores, gold), ks=ks, ties=ties)


def metrics_from_counts(
    greater: np.ndarray, tied: np.ndarray, ks: Sequence[int] = (1, 3, 5), ties: Ties = "expected"
) -> dict[str, float | int]:
    """`ranking_metrics` from the per-mention counts of `tie_counts` (concatenated over blocks, if taken so).

    >>> metrics_from_counts(*tie_counts([[0.2, 0.9, 0.5], [1.0, 1.0]], [2, 0]), ks=(1, 2))["mr"]
    1.75
    """
    _check_ties(ties)
    for k in ks:
        _check_k(k)
    greater, tied = np.asarray(greater, dtype=np.int64), np.asarray(tied, dtype=np.int64)
    out: dict[str, float | int] = {"accuracy": _hits(greater, tied, 1, ties)}
    out.update({f"hits@{k}": _hits(greater, tied, k, ties) for k in ks})
    out["mrr"] = _mean(_reciprocal_ranks(greater, tied, ties))
    out["mr"] = _mean(_ranks(greater, tied, ties))
    out["count"] = len(greater)
    return out
