"""M³EL ranking metrics as an `evaluate` module: a thin wrapper around `m3el_hf.evaluation.metrics.ranking_metrics`.

`evaluate` is in maintenance mode; nothing in m3el_hf depends on this module for correctness. It
exists so that `evaluate`-based pipelines can use M³EL scoring unchanged:

    >>> import m3el_hf.evaluation.metrics
    >>> metric = evaluate.load(m3el_hf.evaluation.metrics.evaluate_module_path())

`evaluate` copies this file into its module cache and imports it from there, so it imports m3el_hf
absolutely (never relatively) and works wherever m3el_hf is installed. Its import scanner mis-reads
``import a, b``: keep one import per line.
"""

import datasets
import evaluate

from m3el_hf.data.dataset_card import CITATION
from m3el_hf.evaluation.metrics import ranking_metrics

__all__ = ["M3elRanking"]

_DESCRIPTION = """
Ranking metrics for M³EL entity linking: for each mention the model scores its candidates, and the
metrics report where the gold candidate lands: accuracy (Hits@1), Hits@k, mean reciprocal rank and
mean rank (MR, 1-based, lower is better).
Ties are handled honestly: under `ties="expected"` each metric is its exact expectation when ties are
broken at random (a constant scorer gets exactly chance), under `ties="pessimistic"` ties count as
errors. Unscorable candidates are -inf (NaN is read as -inf); an unscorable gold is ranked last.
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (`list` of `list` of `float`): candidate scores per mention (higher is better); lists may
        differ in length. Stored as float32, so pass float32 scores to match
        `m3el_hf.evaluation.metrics.ranking_metrics` bit for bit (float64 scores closer than float32 precision
        become ties).
    gold (`list` of `int`): index of the gold candidate in each mention's list.
    ks (`tuple` of `int`, *optional*, defaults to `(1, 3, 5)`): cut-offs reported as `hits@{k}`.
    ties (`str`, *optional*, defaults to `"expected"`): `"expected"` or `"pessimistic"`.

Returns:
    `dict`: `accuracy`, `hits@{k}` for each k, `mrr`, `mr` (mean rank, lower is better) and `count`.

Examples:
    >>> import m3el_hf.evaluation.metrics
    >>> metric = evaluate.load(m3el_hf.evaluation.metrics.evaluate_module_path())
    >>> metric.compute(scores=[[0.2, 0.9, 0.5], [1.0, 1.0]], gold=[2, 0], ks=(1, 2))
    {'accuracy': 0.25, 'hits@1': 0.25, 'hits@2': 1.0, 'mrr': 0.625, 'mr': 1.75, 'count': 2}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class M3elRanking(evaluate.Metric):
    """Accuracy, Hits@k, MRR and mean rank of the gold candidate; see `m3el_hf.evaluation.metrics.ranking_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"scores": datasets.Sequence(datasets.Value("float32")), "gold": datasets.Value("int32")}
            ),
            reference_urls=["https://arxiv.org/abs/2410.18096"],
        )

    def _compute(
        self, scores: list[list[float]], gold: list[int], ks: tuple[int, ...] = (1, 3, 5), ties: str = "expected"
    ) -> dict[str, float | int]:
        return ranking_metrics(scores, gold, ks=ks, ties=ties)
