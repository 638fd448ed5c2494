"""The MTEB tasks, encoder and harness: the built-in evaluator's numbers, the tie rule, MTEB's CLIP, metadata, edges."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import mteb
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import HfApi
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.results import TaskResult
from mteb.types import PromptType
from photos import encoded, rotated_jpeg

from m3el_hf.benchmark import PROTOCOLS, eval_yaml, mteb_task_name, task_id
from m3el_hf.cli import main
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.evaluation import mteb_retrieval, mteb_tasks
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.mteb_harness import build_mteb_tasks, evaluate_with_mteb, load_mteb_model
from m3el_hf.evaluation.mteb_model import CLIPNDEncoder
from m3el_hf.evaluation.mteb_retrieval import TIE_ULPS, AbsTaskM3EL
from m3el_hf.evaluation.mteb_tasks import (
    TASKS,
    M3ELI2ICandidates,
    M3ELI2ICandidatesLeakFree,
    M3ELT2TCandidates,
    M3ELT2TKb,
    M3ELTI2TCandidates,
    M3ELTI2TICandidates,
)
from m3el_hf.evaluation.results import METRIC_KEYS, EvaluationResult, read_results
from m3el_hf.modeling.configuration_clipnd import CLIPNDConfig
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.provenance import make_provenance
from m3el_hf.tasks import TASK_NAMES, get_task
from m3el_hf.tasks import TOPICS as ALL_TOPICS

TOPICS = ("movies", "books")  # those of the `release` fixture (conftest.py)
REPO = Path(__file__).resolve().parents[2]
SPLIT = "train"  # the release's largest split (49 instances, leaked ones included); the tasks' own is "test"
COUNT_KEYS = ("evaluated", "excluded", "leaked")
_CATEGORY = {"T": "t", "I": "i", "TI": "it"}
_MODALITIES = {"T": {"text"}, "I": {"image"}, "TI": {"text", "image"}}


# ---------------------------------------------------------------------------------------------
# Helpers: releases rewritten on disk, the built-in evaluator, record comparison
# ---------------------------------------------------------------------------------------------


def _copy_release(release: Path, target: Path) -> Path:
    shutil.copytree(release, target)
    return target


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test builds its own `datasets` cache: `datasets` keys a local folder's cache by the folder's name and
    its card, so two copies of the release named alike, rewritten differently, would read each other's rows."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def _rewrite(folder: Path, pattern: str, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Rewrite the parquet files of `folder` matching `pattern`, their rows changed in place by `change`."""
    files = sorted(folder.glob(pattern))
    assert files, pattern
    for file in files:
        table = pq.read_table(file)
        rows = table.to_pylist()
        change(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), file)


def _load(data: Path, split: str, topics: Iterable[str] = TOPICS) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The instances of `split` and the KB rows of `topics`, for the built-in evaluator."""
    rows = [datasets.load_dataset(str(data), topic, split=split) for topic in topics]
    kb = [datasets.load_dataset(str(data), f"{topic}-kb", split="kb") for topic in topics]
    return datasets.concatenate_datasets(rows), datasets.concatenate_datasets(kb)


def _builtin(
    checkpoint: Path, data: Path, split: str, topics: Iterable[str] = TOPICS, **kwargs: Any
) -> EvaluationResult:
    model = CLIPNDModel.from_pretrained(checkpoint).eval()
    instances, kb = _load(data, split, topics)
    kwargs = {"protocols": PROTOCOLS, "model_name": "model", "checkpoint": str(checkpoint), **kwargs}
    return evaluate_model(model, *load_processor(checkpoint), instances, kb=kb, split=split, progress=False, **kwargs)


def _by_cell(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["protocol"], r["task"], r["topic"]): r for r in records}


def _same_metric(a: float | None, b: float | None) -> bool:
    a, b = (math.nan if v is None else v for v in (a, b))
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12


def _assert_same_records(got: Iterable[dict[str, Any]], expected: Iterable[dict[str, Any]]) -> None:
    """Every record equal: metrics to 1e-12 (NaN equal to NaN), counts and labels exactly, in the same order."""
    got, expected = list(got), list(expected)
    assert [(r["protocol"], r["task"], r["topic"]) for r in got] == [
        (r["protocol"], r["task"], r["topic"]) for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert list(a) == list(b)
        cell = (a["protocol"], a["task"], a["topic"])
        for key in METRIC_KEYS:
            assert _same_metric(a[key], b[key]), (cell, key, a[key], b[key])
        assert {k: a[k] for k in a if k not in METRIC_KEYS} == {k: b[k] for k in b if k not in METRIC_KEYS}, cell


def _task(cls: type[AbsTaskM3EL], data: Path, topics: Iterable[str] = TOPICS, split: str = "test") -> AbsTaskM3EL:
    return cls(dataset=str(data)).filter_languages(None, hf_subsets=list(topics)).filter_eval_splits([split])


# ---------------------------------------------------------------------------------------------
# Module fixtures: a name-only checkpoint (its scores tie), both harnesses on every task and protocol
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def name_only_path(tiny_clip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with ``augment_description=False``: candidates sharing a name get one text, their scores tie."""
    folder = tmp_path_factory.mktemp("name-only")
    CLIPNDModel.from_pretrained(tiny_clip_path, augment_description=False).save_pretrained(folder)
    for processor in load_processor(tiny_clip_path):
        processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def both_harnesses(release: Path, tiny_clip_path: Path, name_only_path: Path) -> Callable[[str], dict]:
    """``run("tiny" | "name-only")``: MTEB's records, the built-in's, the built-in's with pessimistic ties; cached."""
    paths = {"tiny": tiny_clip_path, "name-only": name_only_path}
    runs: dict[str, dict[str, EvaluationResult]] = {}

    def run(kind: str) -> dict[str, EvaluationResult]:
        if kind not in runs:
            path = paths[kind]
            options = {"topics": TOPICS, "tasks": TASK_NAMES, "protocols": PROTOCOLS, "split": SPLIT}
            runs[kind] = {
                "mteb": evaluate_with_mteb(str(path), str(release), **options, progress=False, device="cpu"),
                "builtin": _builtin(path, release, SPLIT),
                "pessimistic": _builtin(path, release, SPLIT, ties="pessimistic"),
            }
        return runs[kind]

    return run


# ---------------------------------------------------------------------------------------------
# 1. The MTEB harness gives the built-in evaluator's records
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiny", "name-only"])
def test_mteb_records_equal_the_builtin_evaluator(both_harnesses: Callable[[str], dict], kind: str) -> None:
    """Every task × topic × protocol, overall records included: metrics to 1e-12, counts exactly."""
    run = both_harnesses(kind)
    got, expected = run["mteb"].records, run["builtin"].records
    _assert_same_records(got, expected)
    cells = _by_cell(got)
    leak_free = [t for t in TASK_NAMES if get_task(t).mention_needs_image]
    assert len(cells) == 3 * (2 * len(TASK_NAMES) + 2 * len(leak_free)) == 90
    assert {topic for _, _, topic in cells} == {*TOPICS, "all"}
    # Something real was compared: every cell evaluated, leaked instances left out of the leak-free ones.
    assert all(r["evaluated"] > 0 and r["excluded"] == 0 for r in got)
    assert all(r["leaked"] > 0 for r in got if r["protocol"].endswith("-leak-free"))
    assert all(r["ties"] == "expected" and r["split"] == SPLIT for r in got)


@pytest.mark.slow
def test_name_only_scores_really_tie(both_harnesses: Callable[[str], dict], release: Path) -> None:
    """Candidates sharing a name tie under the name-only model, and that changes the scores: the MTEB harness's
    equality with the built-in evaluator (previous test) covers the tie rule, not just distinct scores."""
    instances, _ = _load(release, SPLIT)
    names = [[c["name"] for c in candidates] for candidates in instances["candidates"]]
    assert sum(len(set(n)) < len(n) for n in names) > len(names) // 2
    run = both_harnesses("name-only")
    expected, pessimistic = _by_cell(run["mteb"].records), _by_cell(run["pessimistic"].records)
    tied = {cell for cell in expected if expected[cell]["accuracy"] > pessimistic[cell]["accuracy"] + 1e-9}
    # Text entities tie (equal names); image entities do not, their images differ.
    for protocol in ("candidates", "kb"):
        assert {(protocol, task, topic) for task in ("T-T", "I-T", "TI-T") for topic in (*TOPICS, "all")} <= tied
    assert not {cell for cell in tied if cell[1].endswith("-I") or cell[1].endswith("-TI")}
    # With descriptions in the entity text, the tiny model's scores do not tie: hence the name-only model.
    tiny = both_harnesses("tiny")
    for got, worst in zip(tiny["mteb"].records, tiny["pessimistic"].records, strict=True):
        assert all(_same_metric(got[key], worst[key]) for key in METRIC_KEYS)


# ---------------------------------------------------------------------------------------------
# 2. The tie rule, by hand
# ---------------------------------------------------------------------------------------------

_TOLERANCE = 8 * 2.0**-23  # TIE_ULPS (8, as eval.yaml states) float32 ulps of 1, the scale of cosine scores
_ULP_ABOVE_QUARTER = float(np.nextafter(np.float32(0.25), np.float32(1)))


def _expected(greater: int, tied: int) -> dict[str, Fraction]:
    """Hits@k and reciprocal rank of a gold with `greater` entities above it and `tied` others tied, by hand."""
    ranks = range(greater + 1, greater + tied + 2)
    hits = {k: Fraction(sum(r <= k for r in ranks), len(ranks)) for k in (1, 3, 5)}
    return {**hits, "rr": sum((Fraction(1, r) for r in ranks), Fraction(0)) / len(ranks)}


_MISSED = {1: Fraction(0), 3: Fraction(0), 5: Fraction(0), "rr": Fraction(0)}
_CASES = {
    # three exact ties, the gold among them: accuracy 1/3, MRR (1 + 1/2 + 1/3) / 3
    "exact ties": ({"gold": 0.5, "a": 0.5, "b": 0.5, "c": 0.1}, _expected(0, 2)),
    # one float32 ulp above the gold, and exactly 8 ulps of 1 below it, are ties; more than 8 ulps above is not
    "ulp-split ties": (
        {"gold": 0.25, "x": _ULP_ABOVE_QUARTER, "z": 0.25 - _TOLERANCE, "w": 0.25 + _TOLERANCE + 2.0**-30, "y": 0.9},
        _expected(2, 2),
    ),
    # at scale 100 the tolerance is 8 ulps of 100 (6.1e-5): 3e-5 above the gold ties, 1e-4 above does not
    "large-scale ties": ({"gold": 50.0, "near": 50.0 + 3e-5, "far": 50.0 + 1e-4, "top": 100.0}, _expected(2, 1)),
    # ... while at scale 1 the same 3e-5 is a real difference
    "small-scale gap": ({"gold": 0.5, "above": 0.5 + 3e-5}, _expected(1, 0)),
    "ranked sixth": ({"gold": 0.1, **{f"d{i}": 0.2 + i / 10 for i in range(5)}}, _expected(5, 0)),
    # an infinite score elsewhere does not widen the tolerance; a gold scored -inf or NaN ranks last
    "infinite other": ({"gold": 0.5, "low": float("-inf"), "high": float("inf")}, _expected(1, 0)),
    "gold -inf": ({"gold": float("-inf"), "a": 0.1, "b": -0.3}, _expected(2, 0)),
    "gold NaN": ({"gold": float("nan"), "a": 0.1}, _expected(1, 0)),
    "gold +inf tied": ({"gold": float("inf"), "a": float("inf"), "b": 0.2}, _expected(0, 1)),
    "gold not retrieved": ({"a": 0.9, "b": 0.8}, _MISSED),
    "query not retrieved": (None, _MISSED),
}


def _scores(task: AbsTaskM3EL, cases: dict[str, tuple]) -> dict[str, float]:
    qrels = {query: {"gold": 1, "other": 0} for query in cases}
    results = {query: ranking for query, (ranking, _) in cases.items() if ranking is not None}
    return task.task_specific_scores({}, qrels, results, hf_split="test", hf_subset="movies")


def _check(scores: dict[str, float], expected: list[dict[str, Fraction]]) -> None:
    mean = {key: sum((e[key] for e in expected), Fraction(0)) / len(expected) for key in (1, 3, 5, "rr")}
    for k in (1, 3, 5):
        assert scores[f"expected_hits_at_{k}"] == pytest.approx(float(mean[k]), abs=1e-15)
    assert scores["expected_accuracy"] == scores["expected_hits_at_1"]
    assert scores["expected_mrr"] == pytest.approx(float(mean["rr"]), abs=1e-15)


@pytest.mark.parametrize("case", list(_CASES))
def test_tie_rule_by_hand(case: str) -> None:
    """`task_specific_scores` on one hand-made query: the expected metrics under random tie-breaking."""
    _check(_scores(M3ELT2TCandidates(), {case: _CASES[case]}), [_CASES[case][1]])


def test_tie_rule_means_over_queries_and_reports_the_counts() -> None:
    task = M3ELT2TCandidates()
    task.counts["movies/test"] = {"evaluated": 7, "excluded": 2, "leaked": 1}
    scores = _scores(task, _CASES)
    _check(scores, [expected for _, expected in _CASES.values()])
    assert scores["expected_accuracy"] == pytest.approx((1 / 3 + 1 / 2) / len(_CASES))  # the two tied golds
    assert {key: scores[key] for key in COUNT_KEYS} == {"evaluated": 7, "excluded": 2, "leaked": 1}
    # The tolerance the cases above use is the one the benchmark states.
    assert TIE_ULPS == 8
    assert "scores within 8 float32 ulps are tied" in yaml.safe_load(eval_yaml(TOPICS))["description"]


# ---------------------------------------------------------------------------------------------
# 3. MTEB's own CLIP wrapper runs the tasks unchanged
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mteb_clip_wrapper_runs_the_tasks(tiny_clip_path: Path, release: Path) -> None:
    """MTEB's CLIPModel (transformers AutoModel/AutoProcessor) on the tiny folder, offline. It needs a ModelMeta
    with image and text modalities, or mteb.evaluate refuses the image tasks. Image-to-image cosine equals the
    built-in evaluator's dot product of unit vectors, so that task's scores agree; TI fusion differs by design."""
    from mteb.models.model_implementations.clip_models import CLIPModel, clip_vit_base_patch32

    wrapper = CLIPModel(str(tiny_clip_path), revision=None, device="cpu")
    assert wrapper.mteb_model_meta is None
    wrapper.mteb_model_meta = clip_vit_base_patch32.model_copy(
        update={"name": "local/tiny-clip", "revision": "local", "embed_dim": 16, "n_parameters": None}
    )
    classes = (M3ELI2ICandidatesLeakFree, M3ELTI2TCandidates, M3ELT2TKb)
    result = mteb.evaluate(
        wrapper, [_task(cls, release, split=SPLIT) for cls in classes], cache=None, show_progress_bar=False
    )
    protocols = {"M3ELI2ICandidatesLeakFree": ("candidates-leak-free", "I-I")}
    protocols |= {"M3ELTI2TCandidates": ("candidates", "TI-T"), "M3ELT2TKb": ("kb", "T-T")}
    builtin = _by_cell(_builtin(tiny_clip_path, release, SPLIT, tasks=("I-I", "TI-T", "T-T")).records)
    assert [r.task_name for r in result.task_results] == [cls.metadata.name for cls in classes]
    for task_result in result.task_results:
        protocol, task = protocols[task_result.task_name]
        scores = task_result.scores[SPLIT]
        assert sorted(s["hf_subset"] for s in scores) == sorted(TOPICS)
        for s in scores:
            reference = builtin[protocol, task, s["hf_subset"]]
            assert 0 <= s["main_score"] <= 1 and s["main_score"] == s["expected_accuracy"]
            assert 0 < s["expected_mrr"] <= 1
            assert {key: s[key] for key in COUNT_KEYS} == {key: reference[key] for key in COUNT_KEYS}
            if task == "I-I":
                assert s["expected_accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
                assert s["expected_mrr"] == pytest.approx(reference["mrr"], abs=1e-12)
    assert sum(s["leaked"] for s in result.task_results[0].scores[SPLIT]) > 0


# ---------------------------------------------------------------------------------------------
# 4. Metadata and descriptive statistics
# ---------------------------------------------------------------------------------------------


def _spec(name: str) -> tuple[str, str]:
    """The M³EL task and protocol whose MTEB task is `name`."""
    matches = [(t, p) for t in TASK_NAMES for p in PROTOCOLS if mteb_task_name(t, p) == name]
    assert len(matches) == 1, name
    return matches[0]


def test_the_thirty_tasks_are_the_benchmark_tasks() -> None:
    names = [cls.metadata.name for cls in TASKS]
    expected = {mteb_task_name(t, p) for t in TASK_NAMES for p in PROTOCOLS} - {None}
    assert len(names) == len(set(names)) == len(expected) == 30
    assert set(names) == expected


@pytest.mark.parametrize("cls", TASKS, ids=lambda cls: cls.metadata.name)
def test_task_metadata(cls: type[AbsTaskM3EL], release: Path) -> None:
    """Name, category, modalities, subsets, split, main score, reference, citation; MTEB calls the metadata filled."""
    task_name, protocol = _spec(cls.metadata.name)
    spec = get_task(task_name)
    metadata = cls.metadata
    assert metadata.name == task_id("all", task_name, protocol)
    assert metadata.category == f"{_CATEGORY[spec.mention]}2{_CATEGORY[spec.entity]}"
    assert set(metadata.get_modalities(PromptType.query)) == _MODALITIES[spec.mention]
    assert set(metadata.get_modalities(PromptType.document)) == _MODALITIES[spec.entity]
    assert set(metadata.modalities) == _MODALITIES[spec.mention] | _MODALITIES[spec.entity]
    text_only = task_name == "T-T"
    base = "Reranking" if protocol.startswith("candidates") else "Retrieval"
    assert metadata.type == (base if text_only else f"Any2Any{base}")
    assert metadata.hf_subsets == list(ALL_TOPICS)
    assert metadata.eval_splits == ["test"]
    assert metadata.main_score == "expected_accuracy"
    assert "2410.18096" in metadata.reference
    assert (
        metadata.bibtex_citation.strip().startswith("@article{m3el2024,") and "2410.18096" in metadata.bibtex_citation
    )
    assert metadata.dataset == {"path": "m3el-hf/M3EL", "revision": "main"}
    assert metadata.is_filled()
    metadata._validate_metadata()  # the language codes
    task = cls(dataset=str(release))
    assert (task.mention, task.entity) == (spec.mention, spec.entity)
    assert task.ranks_kb == protocol.startswith("kb")
    assert task.leak_free == protocol.endswith("-leak-free")
    assert task.metadata.dataset == {"path": str(release), "revision": "local"}
    assert type(task).metadata.dataset == {"path": "m3el-hf/M3EL", "revision": "main"}  # the class is untouched


def test_descriptive_statistics(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calculate_descriptive_statistics` counts the queries and documents of the test split. MTEB writes the
    statistics next to its own code and averages over every subset of the metadata, so the test sends them to
    `tmp_path` and narrows the metadata to the release's two topics."""
    monkeypatch.setattr(TaskMetadata, "descriptive_stat_path", property(lambda self: tmp_path / f"{self.name}.json"))
    instances = {topic: _load(release, "test", [topic]) for topic in TOPICS}
    for cls in (M3ELTI2TICandidates, M3ELT2TKb):
        task = _task(cls, release)
        task.metadata = task.metadata.model_copy(update={"eval_langs": {topic: ["eng-Latn"] for topic in TOPICS}})
        stats = task.calculate_descriptive_statistics()["test"]
        assert json.loads((tmp_path / f"{cls.metadata.name}.json").read_text())["test"]["num_queries"] == 4
        for topic, (rows, kb) in instances.items():
            subset = stats["hf_subset_descriptive_stats"][topic]
            assert subset["num_queries"] == rows.num_rows  # every test instance has every modality
            if cls is M3ELT2TKb:
                assert subset["num_documents"] == kb.num_rows
                assert subset["top_ranked_statistics"] is None
            else:
                entities = {(c["qid"], c["name"], c["description"]) for row in rows["candidates"] for c in row}
                assert subset["num_documents"] == len(entities)
                assert subset["top_ranked_statistics"]["num_top_ranked"] == sum(map(len, rows["candidates"]))
                assert subset["documents_image_statistics"]["unique_images"] == len(entities)
            assert subset["relevant_docs_statistics"]["num_relevant_docs"] == rows.num_rows
        assert stats["num_queries"] == sum(rows.num_rows for rows, _ in instances.values())


# ---------------------------------------------------------------------------------------------
# 5. Exclusions and edge cases
# ---------------------------------------------------------------------------------------------


def _strip_images(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if "candidate_images" in row:
            row["mention_image"] = None
            row["candidate_images"] = [None] * len(row["candidates"])
        else:
            row["image"] = None


@pytest.mark.slow
def test_a_release_without_images(release: Path, tiny_clip_path: Path, tmp_path: Path) -> None:
    """Image tasks score NaN with every instance excluded; the text task is scored as on the full release."""
    bare = _copy_release(release, tmp_path / "bare")
    _rewrite(bare, "data/*/test-*.parquet", _strip_images)
    _rewrite(bare, "kb/*/*.parquet", _strip_images)
    tasks, protocols = ("T-T", "T-I", "I-T", "TI-TI"), ("candidates", "kb", "kb-leak-free")
    options = {"topics": TOPICS, "tasks": tasks, "protocols": protocols, "progress": False, "device": "cpu"}
    result = evaluate_with_mteb(str(tiny_clip_path), str(bare), **options)
    _assert_same_records(
        result.records, _builtin(tiny_clip_path, bare, "test", tasks=tasks, protocols=protocols).records
    )
    full = _by_cell(evaluate_with_mteb(str(tiny_clip_path), str(release), **{**options, "tasks": ("T-T",)}).records)
    sizes = {topic: datasets.load_dataset(str(release), topic, split="test").num_rows for topic in TOPICS}
    sizes["all"] = sum(sizes.values())
    assert len(result.records) == 3 * (2 + 2 + 3 + 3)
    for record in result.records:
        cell = (record["protocol"], record["task"], record["topic"])
        if record["task"] == "T-T":
            assert record == full[cell]
            assert record["evaluated"] == sizes[record["topic"]]
        else:
            assert (record["evaluated"], record["excluded"], record["leaked"]) == (0, sizes[record["topic"]], 0), cell
            assert all(math.isnan(record[key]) for key in METRIC_KEYS), cell


def _drop_column(folder: Path, column: str) -> None:
    """Remove `column` from every instance file and from the card's features (or `datasets` brings it back, null)."""
    for file in sorted(folder.glob("data/*/*.parquet")):
        table = pq.read_table(file)
        info = json.loads(table.schema.metadata[b"huggingface"])
        del info["info"]["features"][column]
        table = table.drop_columns([column]).replace_schema_metadata({"huggingface": json.dumps(info)})
        pq.write_table(table, file)
    _, header, body = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    card = yaml.safe_load(header)
    for config in card["dataset_info"]:
        config["features"] = [feature for feature in config["features"] if feature["name"] != column]
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n{body}", encoding="utf-8")


def test_leak_free_task_needs_the_leak_column(
    release: Path, tiny_clip_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A release without the leak column: the leak-free tasks refuse it, naming the column."""
    old = _copy_release(release, tmp_path / "old")
    _drop_column(old, "mention_image_leak")
    assert "mention_image_leak" not in datasets.load_dataset(str(old), "books", split="test").column_names
    with pytest.raises(ValueError, match=r"has no 'mention_image_leak' column; the leak-free tasks need"):
        _task(M3ELI2ICandidatesLeakFree, old).load_data()
    task = _task(M3ELI2ICandidates, old)  # the other tasks do not read it
    task.load_data()
    assert sum(len(task.dataset[t]["test"]["queries"]) for t in TOPICS) == 4
    # The command line says so too, with either harness.
    args = ["evaluate", "--model", str(tiny_clip_path), "--data", str(old), "--output", str(tmp_path / "r.json")]
    args += ["--tasks", "I-I", "--protocol", "candidates-leak-free"]
    assert main([*args, "--harness", "mteb"]) == 2
    assert "has no 'mention_image_leak' column" in capsys.readouterr().err
    assert main(args) == 2
    assert "lacks the column 'mention_image_leak', which the leak-free protocols read" in capsys.readouterr().err


def _repeat_candidates(rows: list[dict[str, Any]]) -> None:
    """A second occurrence of a non-gold candidate in every third list, of the gold in every third list after it."""
    for i, row in enumerate(rows):
        if i % 3 == 2:
            continue
        j = (row["label"] + 1) % len(row["candidates"]) if i % 3 == 0 else row["label"]
        for column in ("candidates", "candidate_images", "candidate_image_sources"):
            row[column] = [*row[column], row[column][j]]


@pytest.mark.slow
def test_a_candidate_list_naming_an_entity_twice_ranks_both(
    release: Path, tiny_clip_path: Path, tmp_path: Path
) -> None:
    """Both occurrences are ranked, as the built-in evaluator ranks the list: a repeated gold ties with its copy."""
    repeated = _copy_release(release, tmp_path / "repeated")
    _rewrite(repeated, f"data/*/{SPLIT}-*.parquet", _repeat_candidates)
    tasks = ("T-T", "I-I", "TI-TI")
    options = {"topics": TOPICS, "tasks": tasks, "protocols": ("candidates",), "split": SPLIT}
    result = evaluate_with_mteb(str(tiny_clip_path), str(repeated), **options, progress=False, device="cpu")
    builtin = _builtin(tiny_clip_path, repeated, SPLIT, tasks=tasks, protocols=("candidates",))
    _assert_same_records(result.records, builtin.records)
    original = _by_cell(_builtin(tiny_clip_path, release, SPLIT, tasks=tasks, protocols=("candidates",)).records)
    for cell, record in _by_cell(builtin.records).items():  # the repeats matter
        assert record["mrr"] < original[cell]["mrr"] - 1e-3, cell
    task = _task(M3ELTI2TICandidates, repeated, ["books"], SPLIT)
    task.load_data()
    rows = datasets.load_dataset(str(repeated), "books", split=SPLIT)
    top_ranked = task.dataset["books"][SPLIT]["top_ranked"]
    assert [len(top_ranked[row_id]) for row_id in rows["id"]] == [len(c) for c in rows["candidates"]]
    assert all(len(set(docs)) == len(docs) for docs in top_ranked.values())
    assert any(len({c["qid"] for c in candidates}) < len(candidates) for candidates in rows["candidates"])


# ---------------------------------------------------------------------------------------------
# 6. The command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_mteb_harness_writes_the_builtin_records(
    tiny_clip_path: Path, release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", str(tiny_clip_path), "--model-name", "tiny", "--data", str(release)]
    args += ["--tasks", "T-T", "I-TI", "--protocol", "candidates", "kb-leak-free"]
    assert main([*args, "--harness", "mteb", "--output", str(tmp_path / "mteb.json")]) == 0
    assert main([*args, "--output", str(tmp_path / "builtin.json")]) == 0
    printed = capsys.readouterr().out
    assert "tiny: accuracy (%) (instances evaluated), protocol 'candidates'" in printed
    records = read_results(tmp_path / "mteb.json")
    _assert_same_records(records, read_results(tmp_path / "builtin.json"))
    assert {(r["protocol"], r["task"]) for r in records} == {
        ("candidates", "T-T"),
        ("candidates", "I-TI"),
        ("kb-leak-free", "I-TI"),
    }
    payload = json.loads((tmp_path / "mteb.json").read_text())
    assert payload["synthetic"] is True
    # MTEB's own result files, one per task, for its results repository.
    files = {path.stem: path for path in (tmp_path / "mteb-mteb").rglob("*.json") if path.stem != "model_meta"}
    assert set(files) == {"M3ELT2TCandidates", "M3ELI2TICandidates", "M3ELI2TIKbLeakFree"}
    saved = json.loads(files["M3ELI2TIKbLeakFree"].read_text())
    assert saved["task_name"] == "M3ELI2TIKbLeakFree"
    by_topic = {s["hf_subset"]: s for s in saved["scores"]["test"]}
    cells = _by_cell(records)
    for topic in TOPICS:
        assert by_topic[topic]["main_score"] == pytest.approx(cells["kb-leak-free", "I-TI", topic]["accuracy"])
        assert by_topic[topic]["leaked"] == cells["kb-leak-free", "I-TI", topic]["leaked"]


def test_cli_mteb_harness_refuses_pessimistic_ties(
    tiny_clip_path: Path, release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", str(tiny_clip_path), "--data", str(release), "--output", str(tmp_path / "r.json")]
    assert main([*args, "--harness", "mteb", "--ties", "pessimistic"]) == 2
    error = capsys.readouterr().err
    assert "--harness mteb scores whole splits with ties 'expected'" in error and "--ties pessimistic" in error
    assert "leave out --ties pessimistic, or use --harness builtin." in error
    assert main([*args, "--harness", "mteb", "--max-instances", "3"]) == 2
    error = capsys.readouterr().err
    assert "leave out --max-instances, or use --harness builtin." in error and "--ties" not in error
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r-mteb").exists()


def test_build_mteb_tasks_limits_topics_and_split(release: Path) -> None:
    tasks = build_mteb_tasks(str(release), ["books"], ["T-T", "I-I"], ["candidates", "candidates-leak-free"], "train")
    assert [t.metadata.name for t in tasks] == ["M3ELT2TCandidates", "M3ELI2ICandidates", "M3ELI2ICandidatesLeakFree"]
    assert all(t.hf_subsets == ["books"] and t.eval_splits == ["train"] for t in tasks)


def test_query_texts_use_the_template_the_tasks_are_built_with(release: Path) -> None:
    """The task modules carry no template: m3el-hf builds them with CLIP_ND's, a bare task joins the two fields."""
    rows = datasets.load_dataset(str(release), "books", split="train").select_columns(["mention", "sentence"])
    (built,) = build_mteb_tasks(str(release), ["books"], ["T-T"], ["candidates"], "train")
    bare = _task(M3ELT2TCandidates, release, topics=("books",), split="train")
    texts = {}
    for name, task in (("built", built), ("bare", bare)):
        task.load_data()
        texts[name] = task.dataset["books"]["train"]["queries"]["text"]
    assert texts["built"] == [CLIPNDConfig.mention_template.format(**row) for row in rows]
    assert texts["bare"] == [f"{row['mention']} {row['sentence']}".strip() for row in rows]  # as MTEB joins title, text


_STANDALONE = """
import importlib.abc, sys


class NoM3elHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "m3el_hf":
            raise ImportError("m3el_hf is not installed upstream")


sys.meta_path.insert(0, NoM3elHf())
import mteb
from m3el import mteb_tasks
from mteb.models.model_implementations.clip_models import CLIPModel, clip_vit_base_patch32

data, checkpoint = sys.argv[1:3]
model = CLIPModel(checkpoint, revision=None, device="cpu")
model.mteb_model_meta = clip_vit_base_patch32.model_copy(update={"name": "local/tiny-clip", "revision": "local"})
task = mteb_tasks.M3ELTI2TKb(dataset=data).filter_languages(None, hf_subsets=["movies", "books"])
scores = mteb.evaluate(model, [task.filter_eval_splits(["train"])], cache=None, show_progress_bar=False)
for s in scores.task_results[0].scores["train"]:
    print(f"{s['hf_subset']}: {s['main_score']:.6f} {s['evaluated']}")
print("tasks:", len(mteb_tasks.TASKS), "m3el_hf imported:", any(n.startswith("m3el_hf") for n in sys.modules))
sys.stdout.flush()
"""


def _python(cwd: Path, code: str, *args: str, **env: str) -> list[str]:
    """The lines `code` prints, run offline by a fresh interpreter in `cwd`; it must succeed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


@pytest.mark.slow
def test_the_task_module_runs_alone_as_proposed_upstream(tiny_clip_path: Path, release: Path, tmp_path: Path) -> None:
    """The two module files by themselves (a package of their own, the one absolute import renamed to it) in a fresh
    interpreter where m3el_hf cannot be imported, run by MTEB's own CLIP wrapper: what a reviewer of an upstream
    pull request runs."""
    (tmp_path / "m3el").mkdir()
    (tmp_path / "m3el" / "__init__.py").write_text("")
    for module in (mteb_tasks, mteb_retrieval):  # the absolute import names the module's place upstream
        text = Path(module.__file__).read_text(encoding="utf-8")
        (tmp_path / "m3el" / Path(module.__file__).name).write_text(text.replace("m3el_hf.evaluation.", "m3el."))
    lines = _python(tmp_path, _STANDALONE, str(release), str(tiny_clip_path), PYTHONPATH=str(tmp_path))
    assert lines[-1] == "tasks: 30 m3el_hf imported: False"
    evaluated = {line.split(":")[0]: int(line.split()[-1]) for line in lines[:-1]}
    builtin = _builtin(tiny_clip_path, release, SPLIT, tasks=("TI-T",), protocols=("kb",))
    assert evaluated == {r["topic"]: r["evaluated"] for r in builtin.records if r["topic"] != "all"}


@pytest.mark.slow
def test_task_objects_loaded_by_path_run_and_mteb_writes_and_reads_their_results(
    tiny_clip_path: Path, release: Path, tmp_path: Path
) -> None:
    """As MTEB documents a task outside its registry: the task module loaded from its file (absolute imports),
    its task object passed to mteb.evaluate with a result cache; MTEB's TaskResult writes it and reads it back."""
    spec = importlib.util.spec_from_file_location("m3el_tasks_by_path", mteb_tasks.__file__)
    by_path = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(by_path)
    with pytest.raises(KeyError, match="M3ELT2TCandidates"):
        mteb.get_task("M3ELT2TCandidates")  # not in MTEB's registry: task objects are the way in
    cache = mteb.ResultCache(cache_path=str(tmp_path / "cache"))
    task = _task(by_path.M3ELT2TCandidates, release, split=SPLIT)
    model = CLIPNDEncoder(str(tiny_clip_path), device="cpu", label="tiny")
    result = mteb.evaluate(model, [task], cache=cache, overwrite_strategy="always", show_progress_bar=False)
    written = result.task_results[0]
    written.to_disk(tmp_path / "result.json")
    cached = cache.load_results(tasks=[task], models=[model.mteb_model_meta]).model_results[0].task_results[0]
    builtin = _by_cell(_builtin(tiny_clip_path, release, SPLIT, tasks=("T-T",), protocols=("candidates",)).records)
    for read in (TaskResult.from_disk(tmp_path / "result.json"), cached):
        assert read.task_name == "M3ELT2TCandidates"
        assert read.get_score() == pytest.approx(written.get_score(), abs=1e-6)  # a mean of rounded scores
        for topic_scores, read_scores in zip(written.scores[SPLIT], read.scores[SPLIT], strict=True):
            assert read_scores.keys() == topic_scores.keys()
            for key, value in topic_scores.items():  # MTEB's writer keeps 6 decimals
                assert read_scores[key] == (round(value, 6) if isinstance(value, float) else value), key
            assert read_scores["main_score"] == round(
                builtin["candidates", "T-T", read_scores["hf_subset"]]["accuracy"], 6
            )


def test_mteb_image_wrapper_without_torchvision_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # find_spec answers None: not installed
    with pytest.raises(
        ValueError,
        match=r"^openai/clip-vit-base-patch32: MTEB's wrapper .* needs torchvision: pip install the torchvision",
    ):
        load_mteb_model("openai/clip-vit-base-patch32", device="cpu")


_README_MTEB = re.search(r"```python\n(import mteb\n.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


@pytest.mark.slow
def test_the_readme_mteb_example_runs_as_written(tiny_clip_path: Path, tmp_path: Path) -> None:
    """The README's block, unchanged, where demo-out/ holds a prepared five-topic release and a checkpoint; its
    scores are the built-in evaluator's."""
    (tmp_path / "demo-out" / "clipnd").mkdir(parents=True)
    synthesize(SynthConfig(out=tmp_path / "raw", instances=150, seed=5))
    release = prepare(PrepareConfig(raw=tmp_path / "raw", out=tmp_path / "demo-out" / "m3el")).out
    (tmp_path / "demo-out" / "clipnd" / "final").symlink_to(tiny_clip_path)
    label, printed = _python(tmp_path, _README_MTEB.group(1))[-1].split(": ", 1)
    assert label == "TI-T accuracy per topic through MTEB"
    builtin = _builtin(tiny_clip_path, release, "test", ALL_TOPICS, tasks=("TI-T",), protocols=("candidates",))
    builtin = builtin.records
    assert ast.literal_eval(printed) == {r["topic"]: round(r["accuracy"], 3) for r in builtin if r["topic"] != "all"}


def _damage(rows: list[dict[str, Any]]) -> None:
    """Missing images of every kind: some mention images, some golds', some other candidates'."""
    for i, row in enumerate(rows):
        images = row["candidate_images"]
        if i % 4 == 1:
            images[row["label"]] = None
        if i % 4 == 2:
            images[(row["label"] + 1) % len(images)] = None
        if i % 5 == 0:
            row["mention_image"] = None


@pytest.mark.slow
def test_partial_exclusions_equal_the_builtin_evaluator(release: Path, tiny_clip_path: Path, tmp_path: Path) -> None:
    """Leaving a candidate without the entity modality out of the ranking is the built-in's -inf, on every task."""
    damaged = _copy_release(release, tmp_path / "damaged")
    _rewrite(damaged, f"data/*/{SPLIT}-*.parquet", _damage)
    options = {"topics": TOPICS, "tasks": TASK_NAMES, "protocols": ("candidates",), "split": SPLIT}
    result = evaluate_with_mteb(str(tiny_clip_path), str(damaged), **options, progress=False, device="cpu")
    reference = _builtin(tiny_clip_path, damaged, SPLIT, tasks=TASK_NAMES, protocols=("candidates",))
    _assert_same_records(result.records, reference.records)
    cells = _by_cell(result.records)
    assert all(cells["candidates", task, "all"]["excluded"] > 0 for task in ("I-T", "T-I", "TI-TI"))
    assert cells["candidates", "T-T", "all"]["excluded"] == 0


def test_the_knowledge_base_must_hold_each_gold_once(release: Path) -> None:
    """As the built-in evaluator: a gold missing from its topic's KB, or a KB listing an entity twice, is an error."""
    gold = datasets.load_dataset(str(release), "movies", split="test")[0]["gold_qid"]
    edits = {
        "missing": lambda kb: kb.filter(lambda qid: qid != gold, input_columns="qid"),
        "twice": lambda kb: datasets.concatenate_datasets([kb, kb.select([0])]),
    }
    errors = {
        "missing": f"gold entity '{gold}' is not in the 'movies' knowledge base",
        "twice": r"The 'movies' knowledge base lists entity '\w+' twice",
    }
    for name, edit in edits.items():
        with pytest.raises(ValueError, match=errors[name]):
            _with_kb_edit(_task(M3ELT2TKb, release, topics=("movies",)), edit).load_data()


def _with_kb_edit(task: AbsTaskM3EL, edit: Callable[[datasets.Dataset], datasets.Dataset]) -> AbsTaskM3EL:
    """`task` reading its knowledge bases through `edit` (the card's recorded sizes forbid editing the files)."""
    read = task._read

    def edited(config: str, split: str) -> datasets.Dataset:
        rows = read(config, split)
        return edit(rows) if config.endswith("-kb") else rows

    task._read = edited
    return task


@pytest.mark.slow
def test_records_follow_the_topics_order_and_labels_name_mteb_results(
    release: Path, tiny_clip_path: Path, tmp_path: Path
) -> None:
    """Topics in the order asked, as the built-in harness; two checkpoints both called final/ keep their own files."""
    order = ("books", "movies")
    options = {"tasks": ("T-T",), "protocols": ("candidates",), "progress": False, "device": "cpu"}
    for label in ("run-a", "run-b"):
        folder = tmp_path / "runs" / label / "final"
        shutil.copytree(tiny_clip_path, folder)
        result = evaluate_with_mteb(
            str(folder), str(release), topics=order, model_name=label, results_folder=tmp_path / "mteb", **options
        )
        assert [r["topic"] for r in result.records] == [*order, "all"]
    _assert_same_records(
        result.records,
        _builtin(folder, release, "test", order, tasks=("T-T",), protocols=("candidates",), model_name="run-b").records,
    )
    models = {path.name for path in (tmp_path / "mteb" / "results").iterdir()}
    assert models == {"local__run-a", "local__run-b"}


@pytest.mark.parametrize("harness", ["builtin", "mteb"])
def test_data_revision_reaches_every_read_and_the_leaderboard_entries(
    harness: str, tiny_clip_path: Path, release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hub --data read at --data-revision by either harness (the Hub stood in for by the local release), and the
    leaderboard entries pinning that revision."""
    reads: list[tuple[str, str | None]] = []
    load, names, splits = datasets.load_dataset, datasets.get_dataset_config_names, datasets.get_dataset_split_names

    def hub(function: Callable[..., Any]) -> Callable[..., Any]:
        def read(path: str, *args: Any, revision: str | None = None, **kwargs: Any) -> Any:
            reads.append((path, revision))
            return function(str(release) if path == "me/m3el" else path, *args, **kwargs)

        return read

    for name, function in (("load_dataset", load), ("get_dataset_config_names", names)):
        monkeypatch.setattr(datasets, name, hub(function))
    monkeypatch.setattr(datasets, "get_dataset_split_names", hub(splits))
    args = ["evaluate", "--harness", harness, "--model", str(tiny_clip_path), "--data", "me/m3el"]
    commit = "0123456789abcdef" * 2 + "01234567"
    args += ["--data-revision", commit, "--tasks", "T-T", "--output", str(tmp_path / "r.json")]
    assert main([*args, "--eval-results", str(tmp_path / "entries"), "--dataset-id", "me/m3el"]) == 0
    assert reads and set(reads) == {("me/m3el", commit)}
    (entries,) = (tmp_path / "entries").rglob("*.yaml")
    written = yaml.safe_load(entries.read_text())
    assert {entry["dataset"]["revision"] for entry in written} == {commit}
    harness_note = {"builtin": "m3el-hf's built-in evaluator (not MTEB)", "mteb": "MTEB"}[harness]
    assert all(f"; harness: {harness_note}; m3el-hf " in entry["notes"] for entry in written)
    provenance = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert provenance["harness"] == harness and ("mteb" in provenance["versions"]) is (harness == "mteb")
    # A branch is resolved to the commit it points at: `main` moves.
    monkeypatch.setattr(HfApi, "dataset_info", lambda self, repo_id, revision=None: SimpleNamespace(sha=commit))
    assert make_provenance(harness, "me/m3el", "main", None).dataset_revision == commit


@pytest.mark.slow
def test_real_photographs_give_the_builtin_numbers(
    release: Path, tiny_clip_path: Path, tmp_path: Path, real_photos: dict
) -> None:
    """Real photographs in the stored bytes (EXIF-rotated JPEG, 16-bit greyscale PNG, RGBA PNG, plain JPEG): MTEB
    decodes them with `datasets` and hands PIL images to the encoder, the built-in preprocesses the bytes; the
    same numbers on every image task."""
    photos = [photo.convert("RGB") for photo in real_photos.values() if photo.mode != "RGBA"]
    sixteen_bit = np.asarray(real_photos["camera"], dtype=np.uint16) * 257
    files = [
        rotated_jpeg(photos[0]),
        encoded(PIL.Image.fromarray(sixteen_bit), "PNG"),
        encoded(real_photos["logo"], "PNG"),
        *(encoded(photo, "JPEG", quality=90) for photo in photos[1:]),
    ]

    def photograph(rows: list[dict[str, Any]]) -> None:
        for i, row in enumerate(rows):
            row["mention_image"] = {"bytes": files[i % len(files)], "path": None}
            for j, image in enumerate(row["candidate_images"]):
                if image is not None:
                    image["bytes"] = files[(i + j + 1) % len(files)]

    photographed = _copy_release(release, tmp_path / "photographed")
    _rewrite(photographed, f"data/*/{SPLIT}-*.parquet", photograph)
    stored = datasets.load_dataset(str(photographed), "movies", split=SPLIT)
    stored = stored.cast_column("mention_image", datasets.Image(decode=False))
    assert [row["mention_image"]["bytes"] for row in stored.select(range(2))] == files[:2]
    tasks = [task for task in TASK_NAMES if "I" in task]
    options = {"topics": TOPICS, "tasks": tasks, "protocols": ("candidates",), "split": SPLIT}
    result = evaluate_with_mteb(str(tiny_clip_path), str(photographed), **options, progress=False, device="cpu")
    reference = _builtin(tiny_clip_path, photographed, SPLIT, tasks=tasks, protocols=("candidates",))
    _assert_same_records(result.records, reference.records)
    assert all(record["evaluated"] > 0 for record in result.records)
