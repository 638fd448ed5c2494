"""Entity-index search at Wikidata-like scale: FAISS indexes through ``datasets`` against exhaustive numpy scoring.

    python benchmarks/bench_index.py --entities 1000000 --dim 512 --queries 1000 --threads 2

Builds a synthetic knowledge base of --entities L2-normalised float32 embeddings (seeded; clustered: each
entity is one of --centres random unit centres, one per 50 entities by default, plus Gaussian noise of norm
about --spread, so an entity has neighbours, but close ones), held as an in-memory ``datasets.Dataset`` with
a ``qid`` and an ``embeddings`` column made from Arrow arrays (no copy of the embeddings). The queries are
noisy copies (noise of norm about --query-noise) of random entities, so the entity each comes from is known.

Baseline, measured in the same run: exhaustive inner products with numpy (queries @ embeddings.T over the
dataset's own column, then ``argpartition``), which also gives the exact top-10 of every query. Then, one
index at a time (each is dropped before the next is built), through ``Dataset.add_faiss_index(column=
"embeddings", metric_type=faiss.METRIC_INNER_PRODUCT, string_factory=...)`` and ``Dataset.search_batch``
(all queries in one call, and one query per call):

- ``flat``: ``"Flat"`` (exact);
- ``hnsw``: ``"HNSW32"``, searched with each --ef-search;
- ``ivf``: ``"IVF4096,Flat"``, trained on the first --train-size rows (rows are in random order), searched
  with each --nprobe.

Prints, for each: build time, search latency per query batched (all queries in one call, best of
--repeats) and one query at a time (median over --single-queries), queries/s, recall@10 against the exact
top-10, how often the source entity is the top hit, the index's size (its serialised bytes) and the
process RSS it added, and the speed-ups over numpy. numpy's BLAS and faiss both use --threads threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import datasets
import faiss
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import InMemoryTable

K = 10
GIB = 2**30


def pin_blas_threads(threads: int) -> None:
    """numpy's OpenBLAS reads its thread count once, when it loads: run this script again with it set."""
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(threads):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def rss() -> int:
    return psutil.Process().memory_info().rss


def synthetic_embeddings(args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    """(entities, dim) unit vectors: a random unit centre each, plus noise of norm ~`spread`; built in chunks."""
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    embeddings = np.empty((args.entities, args.dim), dtype=np.float32)
    for start in range(0, args.entities, 100_000):
        block = embeddings[start : start + 100_000]
        block[:] = rng.standard_normal(block.shape, dtype=np.float32)
        block *= np.float32(args.spread / np.sqrt(args.dim))
        block += centres[rng.integers(0, args.centres, len(block))]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return embeddings


def noisy_queries(embeddings: np.ndarray, args: argparse.Namespace, rng: np.random.Generator):
    """--queries unit vectors, each a random entity plus noise of norm ~`query_noise`, and those entities."""
    sources = rng.choice(len(embeddings), args.queries, replace=False)
    noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries = embeddings[sources] + noise * np.float32(args.query_noise / np.sqrt(args.dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries), sources


def entity_dataset(embeddings: np.ndarray) -> datasets.Dataset:
    """A `qid` and an `embeddings` column over `embeddings`' own memory (no Python loop over rows, no copy).

    The fingerprint is given: without one, `Dataset` hashes the whole table (at 1M × 512 that costs seconds
    and several GiB of peak memory).
    """
    rows, dim = embeddings.shape
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim)
    qids = pc.binary_join_element_wise("Q", pc.cast(pa.array(np.arange(1, rows + 1)), pa.string()), "")
    table = InMemoryTable(pa.table({"qid": qids, "embeddings": vectors}))
    return datasets.Dataset(table, fingerprint=f"bench-index-{rows}x{dim}")


def column_view(dataset: datasets.Dataset) -> np.ndarray:
    """The dataset's `embeddings` column as an (entities, dim) numpy array, without a copy."""
    chunks = dataset.data.column("embeddings")
    column = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()  # combine_chunks copies
    values = column.values.to_numpy(zero_copy_only=True)
    return values.reshape(len(column), column.type.list_size)


def numpy_top_k(embeddings: np.ndarray, queries: np.ndarray, chunk: int) -> np.ndarray:
    """Exact top-K rows by inner product, best first: every score computed, then `argpartition`."""
    found = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ embeddings.T  # (chunk, entities)
        part = np.argpartition(scores, -K, axis=1)[:, -K:]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        found[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return found


def timed(search, queries: np.ndarray, repeats: int, single: int) -> dict:
    """Best-of-`repeats` seconds for one batched call, and the median seconds of `single` one-query calls."""
    search(queries[:8])  # warm-up
    batched, found = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        found = search(queries)
        batched = min(batched, time.perf_counter() - start)
    one = []
    for query in queries[:single]:
        start = time.perf_counter()
        search(query[None])
        one.append(time.perf_counter() - start)
    return {"batched": batched / len(queries), "single": float(np.median(one)), "found": np.asarray(found)}


def quality(found: np.ndarray, exact: np.ndarray, sources: np.ndarray) -> dict:
    """Recall@K against the exact top-K, and how often the query's source entity is the top hit."""
    hits = sum(len(np.intersect1d(f, e)) for f, e in zip(found, exact, strict=True))
    return {"recall": hits / exact.size, "source_top1": float(np.mean(found[:, 0] == sources))}


def serialised_bytes(index: faiss.Index) -> int:
    """Bytes of `faiss.write_index(index)`, counted as written (a serialised copy would double the memory)."""
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    faiss.write_index(index, faiss.BufferedIOWriter(faiss.PyCallbackIOWriter(count)))
    return total


def method_specs(args: argparse.Namespace) -> list[tuple[str, str, int | None, list[tuple[str, object]]]]:
    """(name, string factory, train size, [(setting, search params)]) for each method in --methods."""
    specs = {
        "flat": ("Flat", None, [("exact", None)]),
        "hnsw": (
            f"HNSW{args.hnsw_m}",
            None,
            [(f"efSearch={ef}", faiss.SearchParametersHNSW(efSearch=ef)) for ef in args.ef_search],
        ),
        "ivf": (
            f"IVF{args.nlist},Flat",
            min(args.train_size, args.entities),
            [(f"nprobe={n}", faiss.SearchParametersIVF(nprobe=n)) for n in args.nprobe],
        ),
    }
    return [(name, *specs[name]) for name in args.methods]


def bench_method(dataset, spec, queries, exact, sources, args) -> list[dict]:
    """Builds one index on the dataset, times and scores each of its search settings, then drops it."""
    name, factory, train_size, settings = spec
    before = rss()
    start = time.perf_counter()
    dataset.add_faiss_index(
        column="embeddings",
        string_factory=factory,
        metric_type=faiss.METRIC_INNER_PRODUCT,
        train_size=train_size,
        batch_size=args.add_batch,
    )
    build = time.perf_counter() - start
    added = rss() - before
    index = dataset.get_index("embeddings").faiss_index
    size = serialised_bytes(index)
    print(f"{name}: '{factory}' built in {build:.1f} s, {size / GIB:.2f} GiB serialised, RSS +{added / GIB:.2f} GiB")
    rows = []
    for setting, params in settings:
        kwargs = {} if params is None else {"params": params}

        def search(batch, kwargs=kwargs):
            return dataset.search_batch("embeddings", batch, k=K, **kwargs).total_indices

        row = {"method": name, "setting": setting, "build": build, "bytes": size, "rss": added}
        row.update(timed(search, queries, args.repeats, args.single_queries))
        row.update(quality(row.pop("found"), exact, sources))
        rows.append(row)
    check_examples(dataset, queries[:50], kwargs)
    dataset.drop_index("embeddings")
    return rows


def check_examples(dataset: datasets.Dataset, queries: np.ndarray, kwargs: dict) -> None:
    """`get_nearest_examples_batch` (qid column only, as a linker would ask) names the rows `search_batch` found."""
    found = dataset.search_batch("embeddings", queries, k=K, **kwargs).total_indices
    dataset.set_format(columns=["qid"])
    _, examples = dataset.get_nearest_examples_batch("embeddings", queries, k=K, **kwargs)
    dataset.reset_format()
    for rows, hits in zip(found, examples, strict=True):
        assert hits["qid"] == [f"Q{row + 1}" for row in rows if row >= 0], "qids do not match the indices"


def examples_cost(dataset: datasets.Dataset, found: np.ndarray) -> None:
    """What `get_nearest_examples_batch` adds to `search_batch`: fetching each query's hits (`dataset[rows]`)."""
    for label, columns in (("all columns", None), ("qid column only", ["qid"])):
        dataset.set_format(columns=columns)
        start = time.perf_counter()
        for rows in found:
            dataset[[int(row) for row in rows if row >= 0]]
        print(f"fetching the {K} hits' rows ({label}): {(time.perf_counter() - start) / len(found) * 1e3:.3f} ms/query")
    dataset.reset_format()


def print_table(baseline: dict, rows: list[dict]) -> None:
    header = (
        f"{'method':<6} {'setting':<13} {'build s':>8} {'batched ms/q':>12} {'q/s':>9} {'single ms':>9} "
        f"{'recall@10':>9} {'src@1':>6} {'index GiB':>9} {'RSS GiB':>7} {'x batched':>9} {'x single':>8}"
    )
    print(header)
    for row in [baseline, *rows]:
        print(
            f"{row['method']:<6} {row['setting']:<13} {row['build']:8.1f} {row['batched'] * 1e3:12.3f} "
            f"{1 / row['batched']:9.0f} {row['single'] * 1e3:9.3f} {row['recall']:9.4f} {row['source_top1']:6.3f} "
            f"{row['bytes'] / GIB:9.2f} {row['rss'] / GIB:7.2f} {baseline['batched'] / row['batched']:9.1f} "
            f"{baseline['single'] / row['single']:8.1f}"
        )
    print("x batched, x single: the baseline's seconds per query over the method's (speed-up over numpy)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="faiss (omp_set_num_threads) and numpy's BLAS.")
    parser.add_argument("--methods", nargs="+", choices=["flat", "hnsw", "ivf"], default=["flat", "hnsw", "ivf"])
    parser.add_argument("--hnsw-m", type=int, default=32, help="Links per node: the index is 'HNSW<m>'.")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--nlist", type=int, default=4096, help="Inverted lists: the index is 'IVF<nlist>,Flat'.")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--train-size", type=int, default=200_000, help="Rows the IVF k-means is trained on.")
    parser.add_argument(
        "--centres",
        type=int,
        default=None,
        help="Cluster centres of the entities (default: entities / 50, 20,000 at 1M).",
    )
    parser.add_argument("--spread", type=float, default=1.0, help="Norm of an entity's noise around its centre.")
    parser.add_argument("--query-noise", type=float, default=0.5, help="Norm of a query's noise around its entity.")
    parser.add_argument("--single-queries", type=int, default=100, help="Queries also timed one at a time.")
    parser.add_argument("--repeats", type=int, default=3, help="Batched runs; the best is reported.")
    parser.add_argument("--chunk", type=int, default=64, help="Queries per numpy matrix product (memory).")
    parser.add_argument("--add-batch", type=int, default=10_000, help="Rows per add() call of add_faiss_index.")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.centres = args.centres or max(1, args.entities // 50)
    if argv is None:
        pin_blas_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    datasets.disable_progress_bars()
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores; faiss {faiss.__version__}, {args.threads} threads")
    print(f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(args.seed)
    start, before = time.perf_counter(), rss()
    dataset = entity_dataset(synthetic_embeddings(args, rng))
    embeddings = column_view(dataset)
    queries, sources = noisy_queries(embeddings, args, rng)
    print(
        f"data: {dataset.num_rows:,} entities × {args.dim} ({embeddings.nbytes / GIB:.2f} GiB float32), "
        f"{args.queries} queries; built in {time.perf_counter() - start:.1f} s, RSS +{(rss() - before) / GIB:.2f} GiB"
    )
    baseline = {"method": "numpy", "setting": "exhaustive", "build": 0.0, "bytes": 0, "rss": 0}
    baseline.update(
        timed(lambda batch: numpy_top_k(embeddings, batch, args.chunk), queries, args.repeats, args.single_queries)
    )
    exact = baseline.pop("found")  # the exact top-K of every query
    baseline.update(quality(exact, exact, sources))
    examples_cost(dataset, exact)
    rows = []
    for spec in method_specs(args):
        rows.extend(bench_method(dataset, spec, queries, exact, sources, args))
    print_table(baseline, rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"peak RSS of the process: {peak / GIB:.2f} GiB (the embeddings, one index, and transient buffers)")


if __name__ == "__main__":
    main()
