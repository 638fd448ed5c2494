"""Linking latency, cold (one ``m3el-hf link`` process per mention) and warm (`link_batch`), against the bare model
forward measured in the same run; and the recall and latency of an IVF index against how many lists it searches.

    python benchmarks/bench_link.py --instances 1200 --work .bench/link
    python benchmarks/bench_link.py --instances 1200 --work .bench/link --shape vit-b-32 --skip shared ivf

Builds (once, cached under --work) the synthetic release and the tiny random CLIP of `bench_eval.py` (or a random
CLIP of ViT-B/32's shape) and an exact (``Flat``) TI index of the release's ``all-kb``, then measures:

- **cold**: ``m3el-hf -q link --index ...`` for one test mention, text alone and text with its picture, each in a
  fresh interpreter (imports, loading the model and the index, embedding, search, printing); the floor is a fresh
  interpreter that imports torch and transformers, loads stock `CLIPModel` with its tokenizer (and image
  processor) and runs the same mention through `get_text_features` (and `get_image_features`);
- **warm**: `EntityLinker.link_batch` on test mentions with their pictures (mention and entity modality TI), in
  batches of 1 and of 64, per mention; the floor is the model's `encode_text`, `encode_image` and `combine` on the
  same mentions tokenised and preprocessed beforehand, in the same batches;
- **shared**: the same against one candidate list of --shared KB entities shared by the batch (each call embeds
  the list once; the floor adds the list's forward, once per call), and 40 mentions against a 300-entity list
  against one mention;
- **ivf**: --ivf-entities synthetic clustered unit vectors (`bench_index.py`'s, --ivf-dim wide; --ivf-spread sets
  how much clusters overlap, so that one list holds few of a query's neighbours) and mention-like
  queries (noisy copies of entities), ``IVF<--ivf-lists>,Flat``: recall@10 against exact search and ms per query
  (batched, and one query at a time) for each nprobe, and the nprobe `approximate.tune` picks on other queries.

Wall and CPU time (user + system, children included for the cold runs), median of --rounds; one torch thread
(``OMP_NUM_THREADS=1`` for the cold runs) and one FAISS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from bench_eval import build, build_vit_b_32  # the same cached release and tiny CLIP

from m3el_hf.linking import EntityIndex, EntityLinker, Mention
from m3el_hf.modeling.processing import tokenize

_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

_BARE_FORWARD = """
import sys
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
torch.set_num_threads(1)
checkpoint, text, image = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
model = CLIPModel.from_pretrained(checkpoint).eval()
tokens = AutoTokenizer.from_pretrained(checkpoint)([text], return_tensors="pt")
with torch.inference_mode():
    model.get_text_features(**tokens)
    if image:
        import PIL.Image
        processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
        model.get_image_features(**processor(images=[PIL.Image.open(image).convert("RGB")], return_tensors="pt"))
"""


def _timed_process(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process."""
    with tempfile.TemporaryFile() as errors:
        begin = time.perf_counter()
        child = subprocess.Popen(argv, env=_ENV, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - begin
        if status != 0:
            errors.seek(0)
            raise RuntimeError(f"{argv[:6]} failed: {errors.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def _median(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(values) for values in zip(*runs, strict=True))


def cold(checkpoint: Path, index: Path, mention: dict, picture: Path, rounds: int) -> list[tuple[str, tuple]]:
    """Median (wall, CPU, peak RSS) of one-mention processes: ``m3el-hf link`` and the bare forward."""
    text = f"{mention['mention']} : {mention['sentence']}"
    link = [sys.executable, "-m", "m3el_hf", "-q", "link", "--model", str(checkpoint), "--index", str(index)]
    link += ["--mention", mention["mention"], "--sentence", mention["sentence"]]
    bare = [sys.executable, "-c", _BARE_FORWARD, str(checkpoint), text]
    rows = []
    for label, argv in (
        ("m3el-hf link, text", link),
        ("bare forward, text", bare),
        ("m3el-hf link, text + picture", [*link, "--image", str(picture)]),
        ("bare forward, text + picture", [*bare, str(picture)]),
    ):
        rows.append((label, _median([_timed_process(argv) for _ in range(rounds)])))
    return rows


def _bare_batches(linker: EntityLinker, mentions: list[Mention], batch: int) -> list[tuple]:
    """The mentions' model inputs, tokenised and preprocessed beforehand, `batch` at a time."""
    encoders = linker.encoders
    texts = [encoders.templates.mention_text(m.mention, m.sentence) for m in mentions]
    prepared = []
    for start in range(0, len(mentions), batch):
        tokens = tokenize(encoders.tokenizer, texts[start : start + batch], encoders.max_length)
        pixels = encoders.preprocess([m.image for m in mentions[start : start + batch]])
        prepared.append((tokens, pixels))
    return prepared


@torch.inference_mode()
def _bare_forward(linker: EntityLinker, prepared: list[tuple]) -> None:
    model = linker.model
    for tokens, pixels in prepared:
        model.combine(
            texts=model.encode_text(tokens["input_ids"], tokens["attention_mask"]), images=model.encode_image(pixels)
        )


def _per_mention(run, count: int, rounds: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds per mention of `run()` over `count` mentions."""
    samples = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        samples.append(((time.perf_counter() - wall) * 1e3 / count, (time.process_time() - cpu) * 1e3 / count))
    return _median(samples)


def warm(checkpoint: Path, index: Path, mentions: list[Mention], rounds: int) -> list[tuple[str, tuple]]:
    """Per-mention (wall, CPU) ms of `link_batch` and of the bare forward, in batches of 1 and 64."""
    linker = EntityLinker.from_pretrained(checkpoint, device="cpu")
    entities = EntityIndex.load(index)
    linker.link_batch(mentions[:2], index=entities)  # first-call costs (fingerprint, lazy imports) out of the way
    rows = []
    for batch in (1, 64):
        groups = [mentions[s : s + batch] for s in range(0, len(mentions), batch)]
        prepared = _bare_batches(linker, mentions, batch)

        def link(groups=groups) -> None:
            for group in groups:
                linker.link_batch(group, index=entities, top_k=5)

        rows.append((f"link_batch, batch {batch}", _per_mention(link, len(mentions), rounds)))
        rows.append(
            (
                f"bare forward, batch {batch}",
                _per_mention(lambda p=prepared: _bare_forward(linker, p), len(mentions), rounds),
            )
        )
    return rows


def _entity_batches(linker: EntityLinker, entities: list[dict]) -> list[tuple]:
    """The entities' model inputs, tokenised and preprocessed beforehand, in the linker's batches."""
    encoders = linker.encoders
    texts = [encoders.templates.entity_text(e) for e in entities]
    size = encoders.batch_size
    return [
        (
            tokenize(encoders.tokenizer, texts[s : s + size], encoders.max_length),
            encoders.preprocess([e["image"]["bytes"] for e in entities[s : s + size]]),
        )
        for s in range(0, len(entities), size)
    ]


def shared(checkpoint: Path, entities: list[dict], mentions: list[Mention], rounds: int) -> list[tuple[str, tuple]]:
    """Per-mention (wall, CPU) ms of `link_batch` against one shared list, batches of 1 (8 calls) and 64, beside
    the bare forward of the mentions and, once per call, of the list; and 40 mentions against 300 entities."""
    linker = EntityLinker.from_pretrained(checkpoint, device="cpu")
    listed = _entity_batches(linker, entities)
    rows = []
    for batch, count in ((1, 8), (64, 64)):
        groups = [mentions[s : s + batch] for s in range(0, count, batch)]
        prepared = [_bare_batches(linker, group, batch) for group in groups]

        def link(groups=groups) -> None:
            for group in groups:
                linker.link_batch(group, entities, top_k=5)

        def bare(prepared=prepared) -> None:
            for mention_inputs in prepared:
                _bare_forward(linker, mention_inputs)
                _bare_forward(linker, listed)

        rows.append((f"link_batch, batch {batch}", _per_mention(link, count, rounds)))
        rows.append((f"bare forward, batch {batch}", _per_mention(bare, count, rounds)))
    short = entities[:300]
    one = _per_mention(lambda: linker.link_batch(mentions[:1], short), 1, rounds)
    forty = _per_mention(lambda: linker.link_batch(mentions[:40], short), 1, rounds)
    rows.append(("1 mention, 300 entities (per call)", one))
    rows.append(("40 mentions, 300 entities (per call)", forty))
    return rows


def ivf(entities: int, dim: int, lists: int, spread: float, rounds: int) -> tuple[dict, list[tuple[str, tuple]]]:
    """The nprobe `tune` picks on 1,000 queries, and (recall@10, batched ms/query, one-query ms) of exact search
    and of each nprobe on 1,000 other queries."""
    from argparse import Namespace

    import faiss
    import numpy as np
    from bench_index import noisy_queries, synthetic_embeddings

    from m3el_hf.linking.approximate import set_search, tune

    shape = Namespace(entities=entities, dim=dim, centres=max(1, entities // 50), spread=spread, queries=2000)
    shape.query_noise = 0.5
    rng = np.random.default_rng(0)
    vectors = synthetic_embeddings(shape, rng)
    queries, _ = noisy_queries(vectors, shape, rng)
    tuning, held = queries[:1000], queries[1000:]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(held, 10)
    searcher = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    searcher.train(vectors)
    searcher.add(vectors)
    picked, _ = tune(searcher, vectors, tuning, f"IVF{lists},Flat")
    rows = [("exact (Flat)", (1.0, *_search_ms(exact, held, rounds)))]
    for nprobe in (1, 2, 4, 8, 16, 32, 64):
        set_search(searcher, {"nprobe": nprobe}, f"IVF{lists},Flat")
        _, found = searcher.search(held, 10)
        recall = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), found.tolist(), strict=True)])
        )
        rows.append((f"IVF{lists},Flat, nprobe {nprobe}", (recall, *_search_ms(searcher, held, rounds))))
    return picked, rows


def _search_ms(searcher, queries, rounds: int) -> tuple[float, float]:
    """Milliseconds per query of one batched call (best of `rounds`) and the median of 100 one-query calls."""
    batched = min(_seconds(lambda: searcher.search(queries, 10)) for _ in range(rounds)) * 1e3 / len(queries)
    single = statistics.median(_seconds(lambda i=i: searcher.search(queries[i : i + 1], 10)) for i in range(100))
    return batched, single * 1e3


def _seconds(run) -> float:
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin


def _setup(work: Path, instances: int, shape: str, shared: int) -> tuple[Path, Path, list[dict], list[dict]]:
    """The checkpoint, its TI index of ``all-kb`` (built once), 64 test mentions with a picture and `shared` KB
    entities with theirs (undecoded)."""
    data, tiny = build(work, instances)
    checkpoint = tiny if shape == "tiny" else build_vit_b_32(work, tiny)
    index = work / f"index-{shape}"
    kb = datasets.load_dataset(str(data), "all-kb", split="kb")
    if not (index / "index.json").exists():
        linker = EntityLinker.from_pretrained(checkpoint, device="cpu")
        EntityIndex.build(linker, kb, modality="TI", progress=False).save(index, overwrite=True)
    test = datasets.load_dataset(str(data), "all", split="test").cast_column(
        "mention_image", datasets.Image(decode=False)
    )
    rows = [row for row in test.select_columns(["mention", "sentence", "mention_image"]) if row["mention_image"]]
    entities = [e for e in kb.cast_column("image", datasets.Image(decode=False)) if e["image"]][:shared]
    return checkpoint, index, rows[:64], entities


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1200)
    parser.add_argument("--work", type=Path, default=Path(".bench/link"))
    parser.add_argument("--shape", choices=("tiny", "vit-b-32"), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shared", type=int, default=1000, help="Entities in the shared candidate list.")
    parser.add_argument("--ivf-entities", type=int, default=100_000)
    parser.add_argument("--ivf-dim", type=int, default=512)
    parser.add_argument("--ivf-lists", type=int, default=256)
    parser.add_argument(
        "--ivf-spread", type=float, default=1.4, help="Norm of an entity's noise around its cluster's unit centre."
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("cold", "warm", "shared", "ivf"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    import faiss

    faiss.omp_set_num_threads(1)
    work = args.work.resolve()
    checkpoint, index, rows, kb = _setup(work, args.instances, args.shape, args.shared)
    picture = work / "mention.jpg"
    picture.write_bytes(rows[0]["mention_image"]["bytes"])
    mentions = [Mention(r["mention"], r["sentence"], r["mention_image"]["bytes"]) for r in rows]
    meta = json.loads((index / "index.json").read_text())
    print(f"{args.shape} CLIP, TI index of {meta['entities']} entities, {len(mentions)} test mentions with a picture")
    if "cold" not in args.skip:
        print("cold, one mention per process: wall s / CPU s / peak RSS MiB")
        for label, (wall, cpu, rss) in cold(checkpoint, index, rows[0], picture, args.rounds):
            print(f"  {label:40s} {wall:6.2f} {cpu:6.2f} {rss:6d}")
    for section, measure in (("warm", warm), ("shared", shared)):
        if section not in args.skip:
            source = index if section == "warm" else kb
            print(f"{section}, per mention: wall ms / CPU ms")
            for label, (wall, cpu) in measure(checkpoint, source, mentions, args.rounds):
                print(f"  {label:40s} {wall:8.2f} {cpu:8.2f}")
    if "ivf" not in args.skip:
        picked, table = ivf(args.ivf_entities, args.ivf_dim, args.ivf_lists, args.ivf_spread, args.rounds)
        print(
            f"ivf, {args.ivf_entities:,} x {args.ivf_dim}: tune picks {picked}; recall@10 / batched ms / one-query ms"
        )
        for label, (recall, batched, single) in table:
            print(f"  {label:40s} {recall:6.3f} {batched:8.3f} {single:8.3f}")


if __name__ == "__main__":
    main()
