"""Linking latency, cold (one ``m3el-hf link`` process per mention) and warm (`link_batch`), against the bare model
forward measured in the same run.

    python benchmarks/bench_link.py --instances 1200 --work .bench/link
    python benchmarks/bench_link.py --instances 1200 --work .bench/link --shape vit-b-32

Builds (once, cached under --work) the synthetic release and the tiny random CLIP of `bench_eval.py` (or a random
CLIP of ViT-B/32's shape) and an exact (``Flat``) TI index of the release's ``all-kb``, then measures:

- **cold**: ``m3el-hf -q link --index ...`` for one test mention, text alone and text with its picture, each in a
  fresh interpreter (imports, loading the model and the index, embedding, search, printing); the floor is a fresh
  interpreter that imports torch and transformers, loads stock `CLIPModel` with its tokenizer (and image
  processor) and runs the same mention through `get_text_features` (and `get_image_features`);
- **warm**: `EntityLinker.link_batch` on test mentions with their pictures (mention and entity modality TI), in
  batches of 1 and of 64, per mention; the floor is the model's `encode_text`, `encode_image` and `combine` on the
  same mentions tokenised and preprocessed beforehand, in the same batches.

Wall and CPU time (user + system, children included for the cold runs), median of --rounds; one torch thread
(``OMP_NUM_THREADS=1`` for the cold runs).
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


def _setup(work: Path, instances: int, shape: str) -> tuple[Path, Path, list[dict]]:
    """The checkpoint, its TI index of ``all-kb`` (built once) and 64 test mentions with a picture."""
    data, tiny = build(work, instances)
    checkpoint = tiny if shape == "tiny" else build_vit_b_32(work, tiny)
    index = work / f"index-{shape}"
    if not (index / "index.json").exists():
        linker = EntityLinker.from_pretrained(checkpoint, device="cpu")
        kb = datasets.load_dataset(str(data), "all-kb", split="kb")
        EntityIndex.build(linker, kb, modality="TI", progress=False).save(index, overwrite=True)
    test = datasets.load_dataset(str(data), "all", split="test").cast_column(
        "mention_image", datasets.Image(decode=False)
    )
    rows = [row for row in test.select_columns(["mention", "sentence", "mention_image"]) if row["mention_image"]]
    return checkpoint, index, rows[:64]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1200)
    parser.add_argument("--work", type=Path, default=Path(".bench/link"))
    parser.add_argument("--shape", choices=("tiny", "vit-b-32"), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    work = args.work.resolve()
    checkpoint, index, rows = _setup(work, args.instances, args.shape)
    picture = work / "mention.jpg"
    picture.write_bytes(rows[0]["mention_image"]["bytes"])
    mentions = [Mention(r["mention"], r["sentence"], r["mention_image"]["bytes"]) for r in rows]
    meta = json.loads((index / "index.json").read_text())
    print(f"{args.shape} CLIP, TI index of {meta['entities']} entities, {len(mentions)} test mentions with a picture")
    print("cold, one mention per process: wall s / CPU s / peak RSS MiB")
    for label, (wall, cpu, rss) in cold(checkpoint, index, rows[0], picture, args.rounds):
        print(f"  {label:32s} {wall:6.2f} {cpu:6.2f} {rss:6d}")
    print("warm, per mention: wall ms / CPU ms")
    for label, (wall, cpu) in warm(checkpoint, index, mentions, args.rounds):
        print(f"  {label:32s} {wall:7.2f} {cpu:7.2f}")


if __name__ == "__main__":
    main()
