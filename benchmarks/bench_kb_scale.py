"""Whole-KB evaluation at MIMIC's scale: encoding vs ranking time and peak RSS, 10k mentions × 160k entities.

    python benchmarks/bench_kb_scale.py --work .bench/kb-scale

Protocol ``kb`` of the text task (T-T) with the tiny model, in two parts:

- ``encoding``: the tiny model encodes a representative sample of entity texts (name and a description of 20 to
  60 words) and mention texts (mention and sentence) through the evaluator's `Encoders`, and the time is
  extrapolated linearly to every entity and mention (encoding is a batched pass per text, so it scales with the
  count);
- ``ranking``: the evaluator's whole-KB ranking (chunks of mentions, tie counts per chunk) over random unit
  embeddings of the tiny model's width for every entity and mention, with random golds.

Prints wall and CPU time (user+sys) of each part, the ranking / encoding ratio, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from m3el_hf.evaluation.evaluator import _rank_against
from m3el_hf.modeling.encoders import Encoders
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.modeling.tiny import build_tiny_clip


def _texts(count: int, seed: int, words: tuple[int, int], prefix: str) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    vocabulary = [f"{prefix}{i}" for i in range(5000)]
    lengths = torch.randint(words[0], words[1] + 1, (count,), generator=generator).tolist()
    return [
        " ".join(vocabulary[j] for j in torch.randint(0, len(vocabulary), (n,), generator=generator).tolist())
        for n in lengths
    ]


def _timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU (user+sys) seconds of `work()`, and what it returned."""
    start_wall, start = time.perf_counter(), os.times()
    out = work()
    end = os.times()
    return time.perf_counter() - start_wall, end.user + end.system - start.user - start.system, out


def encoding(model_path: Path, entities: int, mentions: int, sample: int) -> tuple[float, float]:
    """Wall and CPU seconds to encode `entities` entity texts and `mentions` mention texts, from a sample."""
    model = CLIPNDModel.from_pretrained(model_path).eval()
    encoders = Encoders.for_model(model, *load_processor(model_path), batch_size=64)
    names = _texts(sample, 1, (1, 4), "n")
    descriptions, sentences = _texts(sample, 2, (20, 60), "w"), _texts(sample, 3, (10, 30), "w")
    entity_texts = [
        encoders.templates.entity_text({"name": n, "description": d}) for n, d in zip(names, descriptions, strict=True)
    ]
    mention_texts = [encoders.templates.mention_text(n, s) for n, s in zip(names, sentences, strict=True)]
    with torch.inference_mode():
        entity_wall, entity_cpu, _ = _timed(lambda: encoders.texts(entity_texts))
        mention_wall, mention_cpu, _ = _timed(lambda: encoders.texts(mention_texts))
    scale_e, scale_m = entities / sample, mentions / sample
    return scale_e * entity_wall + scale_m * mention_wall, scale_e * entity_cpu + scale_m * mention_cpu


def ranking(width: int, entities: int, mentions: int) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of the whole-KB ranking of random embeddings, and its metrics."""
    generator = torch.Generator().manual_seed(0)
    entity_embeds = torch.nn.functional.normalize(torch.randn(entities, width, generator=generator), dim=-1)
    mention_embeds = torch.nn.functional.normalize(torch.randn(mentions, width, generator=generator), dim=-1)
    gold = torch.randint(0, entities, (mentions,), generator=generator)
    usable = torch.ones(entities, dtype=torch.bool)
    with torch.inference_mode():
        return _timed(lambda: _rank_against(mention_embeds, entity_embeds, usable, gold, "expected"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(".bench/kb-scale"))
    parser.add_argument("--entities", type=int, default=160_000)
    parser.add_argument("--mentions", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=4096, help="Texts of each kind encoded to extrapolate from.")
    args = parser.parse_args()
    model_path = args.work / "tiny-clip"
    if not (model_path / "config.json").exists():
        build_tiny_clip(model_path, seed=0)
    width = CLIPNDModel.config_class.from_pretrained(model_path).projection_dim
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.mentions} mentions × {args.entities} entities, embedding width {width}")
    rank_wall, rank_cpu, metrics = ranking(width, args.entities, args.mentions)
    print(f"ranking: {rank_wall:.2f} s wall, {rank_cpu:.2f} s CPU (random embeddings; MR {metrics['mr']:.0f})")
    encode_wall, encode_cpu = encoding(model_path, args.entities, args.mentions, args.sample)
    print(f"encoding: {encode_wall:.1f} s wall, {encode_cpu:.1f} s CPU (extrapolated from {args.sample} of each)")
    print(f"ranking / encoding: {rank_wall / encode_wall:.1%} wall, {rank_cpu / encode_cpu:.1%} CPU")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"peak RSS: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
