"""Benchmark the MTEB harness against the built-in evaluator: same model, same data, same cells, one run.

    python benchmarks/bench_mteb.py --instances 1000 --work .bench/mteb

On a synthetic prepared release (drawn images, five topics; cached under ``--work``) and the tiny CLIP, times,
alternately, ``--repeats`` times:

- ``built-in``: what ``m3el-hf evaluate`` does: read each topic's test split and knowledge base, load the
  checkpoint, `evaluate_model` on the nine tasks × protocols ``candidates`` and ``kb`` (``--leak-free`` adds the
  leak-free twins); `evaluate_model` alone is timed too;
- ``mteb``: `evaluate_with_mteb` on the same checkpoint folder and cells (``m3el-hf evaluate --harness mteb``),
  the MTEB modules' in-process caches emptied before each run, as in a fresh process.

Prints min / median seconds, the ratio, the largest difference between the two harnesses' records, and where the
MTEB run's time goes: the phases of MTEB's own timer (`mteb.timing.TimingStack`) summed over every task and
topic, and inside them the pieces this script times by wrapping functions (reading the configs, building the
queries and corpora, the encoder's forward passes, image decoding, MTEB's standard metrics: pytrec_eval, MRR@k
and the abstention nAUCs, against our ``task_specific_scores``). The breakdown is the median run's.

torch runs one thread by default (``--threads``): on a shared machine, two threads slowed the tiny model's forward
passes by up to 10× from one run to the next, which hid everything else; ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
import types
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from bench_eval import build  # the same cached release and tiny CLIP

from m3el_hf.data.features import KB_SPLIT
from m3el_hf.data.loading import load_topic_splits
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.results import METRIC_KEYS
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.tasks import TASK_NAMES, TOPICS


def load_data(data: Path, split: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The instances (every topic's `split`, concatenated) and the knowledge bases, as ``m3el-hf evaluate``."""
    parts = load_topic_splits(str(data), TOPICS, split)
    kb = [datasets.load_dataset(str(data), f"{topic}-kb", split=KB_SPLIT) for topic in parts]
    return datasets.concatenate_datasets(list(parts.values())), datasets.concatenate_datasets(kb)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


class Probes:
    """Seconds, calls and rows of wrapped functions; MTEB's timer phases of every task, on one shared stack."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        from mteb.timing import TimingStack

        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)
        self.timer = TimingStack()

    def wrap(self, owner: Any, name: str, label: str, rows: Callable[..., int] | None = None) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = original(*args, **kwargs)
            self.add(label, time.perf_counter() - start, None if rows is None else rows(args, out))
            return out

        setattr(owner, name, timed)

    def add(self, label: str, seconds: float, rows: int | None = None) -> None:
        self.seconds[label] += seconds
        self.calls[label] += 1
        if rows is not None:
            self.rows[label] += rows

    def share_timer(self) -> None:
        """Hand every task our stack: mteb 2.26.24's `evaluate(timer=...)` does not pass it on (each task gets a
        stack of its own, kept in its result's ``evaluation_phases``)."""
        module = sys.modules["mteb.evaluate"]
        original = module._evaluate_task

        @functools.wraps(original)
        def with_timer(*args: Any, **kwargs: Any) -> Any:
            return original(*args, **{**kwargs, "timer": self.timer})

        module._evaluate_task = with_timer

    def phases(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for phase in self.timer.phases:
            out[phase["name"]] += phase["end"] - phase["start"]
        return out


def install(probes: Probes) -> None:
    """Wrap what the breakdown needs; the wrappers cost microseconds per call (a few thousand calls a run)."""
    import mteb._evaluators.retrieval_evaluator as retrieval_evaluator
    import mteb._evaluators.retrieval_metrics as retrieval_metrics
    import mteb.models.search_wrappers as search_wrappers
    import pytrec_eval

    import m3el_hf.modeling.encoders as encoders
    from m3el_hf.evaluation.mteb_model import CLIPNDEncoder
    from m3el_hf.evaluation.mteb_retrieval import AbsTaskM3EL, _Corpus
    from m3el_hf.modeling.processing import FastImagePreprocessor

    probes.share_timer()
    first_rows = lambda args, out: len(args[1])  # noqa: E731
    out_rows = lambda args, out: len(out)  # noqa: E731
    probes.wrap(AbsTaskM3EL, "_read", READ)
    probes.wrap(datasets, "load_dataset", LOAD_DATASET)
    probes.wrap(AbsTaskM3EL, "_queries", FROM_DICT_QUERIES, out_rows)
    probes.wrap(_Corpus, "dataset", FROM_DICT_CORPUS, out_rows)
    probes.wrap(search_wrappers, "create_dataloader", DATALOADER)
    probes.wrap(CLIPNDEncoder, "encode", ENCODE, out_rows)
    probes.wrap(datasets.Image, "decode_example", DECODE)
    probes.wrap(FastImagePreprocessor, "__call__", PREPROCESS, first_rows)
    probes.wrap(encoders, "tokenize", TOKENIZE, first_rows)
    probes.wrap(CLIPNDModel, "encode_text", TEXT_TOWER, first_rows)
    probes.wrap(CLIPNDModel, "encode_image", IMAGE_TOWER, first_rows)
    probes.wrap(retrieval_evaluator, "calculate_retrieval_scores", MTEB_METRICS)
    probes.wrap(retrieval_metrics, "parse_metrics_from_scores", PYTREC)
    probes.wrap(retrieval_metrics, "mrr", MRR)
    probes.wrap(retrieval_metrics, "evaluate_abstention", NAUC)
    probes.wrap(AbsTaskM3EL, "task_specific_scores", OURS)
    real = pytrec_eval.RelevanceEvaluator

    class RelevanceEvaluator:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            self.inner = real(*args, **kwargs)
            probes.add(PYTREC, time.perf_counter() - start)

        def evaluate(self, results: Any) -> Any:
            start = time.perf_counter()
            out = self.inner.evaluate(results)
            probes.add(PYTREC, time.perf_counter() - start)
            return out

    retrieval_metrics.pytrec_eval = types.SimpleNamespace(RelevanceEvaluator=RelevanceEvaluator)


READ = "AbsTaskM3EL._read (a config's split)"
LOAD_DATASET = "  datasets.load_dataset"
FROM_DICT_QUERIES = "Dataset.from_dict of the queries"
FROM_DICT_CORPUS = "Dataset.from_dict of the corpus"
BUILDING = "the rest: rows to queries, corpus, candidate lists"
DATALOADER = "create_dataloader (MTEB: a dataset.map per call)"
ENCODE = "CLIPNDEncoder.encode"
DECODE = "  image decoding (datasets.Image)"
PREPROCESS = "  image preprocessing (built-in: decoding too)"
TOKENIZE = "  tokenising"
TEXT_TOWER = "  forward, text tower"
IMAGE_TOWER = "  forward, image tower"
MTEB_METRICS = "calculate_retrieval_scores (MTEB's metrics)"
PYTREC = "  pytrec_eval: nDCG, MAP, recall, P, success @k"
MRR = "  MRR@k"
NAUC = "  abstention nAUCs (evaluate_abstention)"
OURS = "task_specific_scores (ours: expected metrics, counts)"
PIECES = {
    "Data loading (AbsTaskM3EL.load_data, ours)": (READ, LOAD_DATASET, FROM_DICT_QUERIES, FROM_DICT_CORPUS, BUILDING),
    "Encoding queries + Encoding corpus + Searching corpus": (
        DATALOADER,
        ENCODE,
        DECODE,
        PREPROCESS,
        TOKENIZE,
        TEXT_TOWER,
        IMAGE_TOWER,
    ),
    "Scoring": (MTEB_METRICS, PYTREC, MRR, NAUC),
    "after Scoring (untracked by MTEB's timer)": (OURS,),
}


def builtin(data: Path, model_path: Path, split: str, protocols: tuple[str, ...], batch_size: int):
    """``m3el-hf evaluate``'s work: read the data, load the checkpoint, evaluate. Returns the result and the seconds
    of reading the data and of `evaluate_model`."""
    start = time.perf_counter()
    dataset, kb = load_data(data, split)
    read = time.perf_counter() - start
    model = CLIPNDModel.from_pretrained(model_path)
    tokenizer, image_processor = load_processor(model_path)
    start = time.perf_counter()
    result = evaluate_model(
        model,
        tokenizer,
        image_processor,
        dataset,
        kb=kb,
        tasks=TASK_NAMES,
        protocols=protocols,
        split=split,
        batch_size=batch_size,
        progress=False,
    )
    return result, read, time.perf_counter() - start


def clear_caches() -> None:
    """Empty the MTEB modules' in-process caches (e.g. of the configs read), so that every run pays what a fresh
    ``m3el-hf evaluate --harness mteb`` process pays."""
    import m3el_hf.evaluation.mteb_harness as harness
    import m3el_hf.evaluation.mteb_model as model
    import m3el_hf.evaluation.mteb_retrieval as tasks

    for module in (tasks, model, harness):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def with_mteb(
    data: Path,
    model_path: Path,
    split: str,
    protocols: tuple[str, ...],
    batch_size: int,
    topics: tuple[str, ...] = TOPICS,
    tasks: tuple[str, ...] = TASK_NAMES,
):
    """``m3el-hf evaluate --harness mteb``'s work (no result files)."""
    from m3el_hf.evaluation.mteb_harness import evaluate_with_mteb

    return evaluate_with_mteb(
        str(model_path),
        str(data),
        topics=topics,
        tasks=tasks,
        protocols=protocols,
        split=split,
        batch_size=batch_size,
        device="cpu",
        progress=False,
    )


def largest_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, int, list[str]]:
    """The largest absolute metric difference of records with the same (protocol, task, topic), how many records
    were compared, and what does not match otherwise (missing records, different counts, NaN on one side)."""
    key = lambda record: (record["protocol"], record["task"], record["topic"])  # noqa: E731
    left, right = {key(r): r for r in a}, {key(r): r for r in b}
    problems = [f"only in built-in: {k}" for k in left.keys() - right.keys()]
    problems += [f"only in mteb: {k}" for k in right.keys() - left.keys()]
    largest = 0.0
    for k in left.keys() & right.keys():
        for metric in METRIC_KEYS:
            x, y = left[k][metric], right[k][metric]
            if math.isnan(x) or math.isnan(y):
                if not (math.isnan(x) and math.isnan(y)):
                    problems.append(f"{k} {metric}: {x} vs {y}")
                continue
            largest = max(largest, abs(x - y))
        for count in ("evaluated", "excluded", "leaked"):
            if left[k][count] != right[k][count]:
                problems.append(f"{k} {count}: {left[k][count]} vs {right[k][count]}")
    return largest, len(left.keys() & right.keys()), problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path(".bench/mteb"))
    parser.add_argument("--split", default="test", help="Split evaluated (the MTEB tasks define test only).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each harness, alternating.")
    parser.add_argument("--leak-free", action="store_true", help="Add the leak-free twins (protocols *-leak-free).")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine; 0: torch's default)."
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    import mteb

    protocols = ("candidates", "kb") + (("candidates-leak-free", "kb-leak-free") if args.leak_free else ())
    data, model_path = build(args.work, args.instances)
    dataset, kb = load_data(data, args.split)  # also fills datasets' cache for both harnesses
    occurrences = sum(map(len, dataset["candidates"]))
    print(f"mteb {mteb.__version__}, datasets {datasets.__version__}")
    print(
        f"data: {dataset.num_rows} {args.split} instances over {len(TOPICS)} topics, {occurrences} candidate "
        f"occurrences, {kb.num_rows} KB entities; 9 tasks × {len(protocols)} protocols"
    )
    probes = Probes()
    install(probes)
    # Warm-up (imports, first calls) of both harnesses, on a few instances and one cell.
    model = CLIPNDModel.from_pretrained(model_path)
    evaluate_model(model, *load_processor(model_path), dataset.select(range(8)), progress=False)
    with_mteb(data, model_path, args.split, ("candidates",), args.batch_size, TOPICS[:1], TASK_NAMES[:1])
    times: dict[str, list[float]] = {"built-in": [], "read": [], "evaluate_model": [], "mteb": []}
    breakdowns = []
    for _ in range(args.repeats):
        probes.reset()
        start = time.perf_counter()
        reference, read, seconds = builtin(data, model_path, args.split, protocols, args.batch_size)
        times["built-in"].append(time.perf_counter() - start)
        times["read"].append(read)
        times["evaluate_model"].append(seconds)
        builtin_probes = (dict(probes.seconds), dict(probes.calls), dict(probes.rows))
        probes.reset()
        clear_caches()
        start = time.perf_counter()
        result = with_mteb(data, model_path, args.split, protocols, args.batch_size)
        times["mteb"].append(time.perf_counter() - start)
        mteb_probes = (dict(probes.seconds), dict(probes.calls), dict(probes.rows))
        breakdowns.append((times["mteb"][-1], probes.phases(), mteb_probes, builtin_probes))

    cells = [r for r in reference.records if r["topic"] != "all"]
    print(f"cells: {len(cells)} (task × protocol × topic) and {len(reference.records) - len(cells)} overall records")
    print(f"\nseconds over {args.repeats} runs each (min / median):")
    for name, label in (
        ("built-in", "built-in, end to end (read data, load model, evaluate)"),
        ("read", f"  of which reading the data ({2 * len(TOPICS)} load_dataset)"),
        ("evaluate_model", "  of which evaluate_model"),
        ("mteb", "mteb: evaluate_with_mteb"),
    ):
        print(f"  {label:<58} {min(times[name]):8.2f} / {statistics.median(times[name]):8.2f}")
    ratio = statistics.median(times["mteb"]) / statistics.median(times["built-in"])
    ratio_eval = statistics.median(times["mteb"]) / statistics.median(times["evaluate_model"])
    print(f"ratio mteb / built-in (medians): {ratio:.1f}x end to end, {ratio_eval:.1f}x against evaluate_model alone")

    largest, compared, problems = largest_difference(reference.records, result.records)
    print(f"equality: {compared} records compared, largest |difference| of {', '.join(METRIC_KEYS)}: {largest:.3g}")
    for problem in problems[:20]:
        print(f"  MISMATCH {problem}")

    median = sorted(breakdowns, key=lambda b: b[0])[len(breakdowns) // 2]
    total, phases, (seconds, calls, rows), (b_seconds, b_calls, b_rows) = median
    print(f"\nwhere the median mteb run's {total:.2f} s go (MTEB's timer phases, summed over tasks and topics):")
    for name, value in sorted(phases.items(), key=lambda item: -item[1]):
        print(f"  {name:<58} {value:8.2f} s  {100 * value / total:5.1f}%")
    untracked = total - sum(phases.values())
    label = "untracked (model load, task set-up, result objects, ...)"
    print(f"  {label:<58} {untracked:8.2f} s  {100 * untracked / total:5.1f}%")
    seconds[BUILDING] = phases.get("Data loading", 0.0) - sum(
        seconds.get(k, 0.0) for k in (READ, FROM_DICT_QUERIES, FROM_DICT_CORPUS)
    )
    print("\npieces (functions wrapped by this script), mteb run | built-in run:")
    for group, labels in PIECES.items():
        print(f"  {group}")
        for label in labels:
            columns = []
            for sec, n, r in ((seconds, calls, rows), (b_seconds, b_calls, b_rows)):
                if label not in sec:
                    columns.append(" " * 32)
                    continue
                count = f"{n[label]:,} calls" if label in n else ""
                count += f", {r[label]:,} rows" if label in r else ""
                columns.append(f"{sec[label]:7.3f} s {count:<22}")
            print(f"    {label:<54} {columns[0]} | {columns[1]}")


if __name__ == "__main__":
    main()
