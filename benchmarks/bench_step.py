"""Benchmark a CLIP_ND training step against the plain ``CLIPModel(..., return_loss=True)`` step.

    python benchmarks/bench_step.py --batch-size 64 --steps 30

Same tiny model weights, same examples, same optimiser, same run. Both steps encode B mention
texts and B entity images (task T-I, so the work is the same); the CLIP_ND step adds the MEL
machinery (row scatter, duplicate-Qid masking, the distributed-ready loss). Collation is timed
separately: collator throughput with 2 DataLoader workers against what the step consumes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import CLIPModel

from m3el_hf.collator import M3ELCollator, lazy_images
from m3el_hf.modeling_clipnd import CLIPNDModel
from m3el_hf.prepare import PrepareConfig, prepare
from m3el_hf.synth import SynthConfig, synthesize
from m3el_hf.tiny import build_tiny_clip


def timed_steps(model: torch.nn.Module, batches: list[dict], steps: int, warmup: int = 5) -> float:
    """Seconds per optimisation step (forward, backward, AdamW) averaged over `steps` after `warmup`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = batches[i % len(batches)]
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def plain_batch(batch: dict) -> dict:
    """The same texts and images as a CLIP_ND T-I batch, in CLIPModel's input format."""
    return {
        "input_ids": batch["mention_input_ids"],
        "attention_mask": batch["mention_attention_mask"],
        "pixel_values": batch["entity_pixel_values"],
        "return_loss": True,
    }


def first_batches(collator: M3ELCollator, rows: datasets.Dataset, batch_size: int, count: int = 8) -> list[dict]:
    return [collator([rows[j] for j in range(i, i + batch_size)]) for i in range(0, count * batch_size, batch_size)]


def collator_rate(rows: datasets.Dataset, collator: M3ELCollator, batch_size: int, workers: int) -> float:
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=workers)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["labels"]) + int(batch["num_dropped"])
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--instances", type=int, default=1500)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    raw = synthesize(SynthConfig(out=work / "raw", instances=args.instances, seed=0))
    folder = prepare(PrepareConfig(raw=raw, out=work / "m3el")).out
    rows = datasets.load_dataset(str(folder), "all", split="train")
    tiny = build_tiny_clip(work / "tiny", seed=0)

    collator = M3ELCollator.from_pretrained(tiny, tasks=("T-I",))
    usable = rows.filter(lambda tasks: "T-I" in tasks, input_columns="tasks")
    batches = first_batches(collator, usable, args.batch_size)
    plain_batches = [plain_batch(b) for b in batches]
    # Alternate the two measurements and keep each one's best round: other load on the machine hits both.
    rounds = [
        (
            timed_steps(CLIPModel.from_pretrained(tiny), plain_batches, args.steps),
            timed_steps(CLIPNDModel.from_pretrained(tiny), batches, args.steps),
        )
        for _ in range(3)
    ]
    plain, clipnd = (min(r[i] for r in rounds) for i in range(2))
    mixed = M3ELCollator.from_pretrained(tiny)
    mixed_batches = first_batches(mixed, rows, args.batch_size)
    clipnd_mixed = timed_steps(CLIPNDModel.from_pretrained(tiny), mixed_batches, args.steps)

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"batch {args.batch_size}, tiny CLIP (hidden 32, 2 layers, 32x32 images)")
    print(f"plain CLIPModel step (return_loss=True):  {plain * 1e3:7.2f} ms")
    print(f"CLIPNDModel step, task T-I:               {clipnd * 1e3:7.2f} ms   ratio {clipnd / plain:.3f}x")
    print(f"CLIPNDModel step, all 9 tasks mixed:      {clipnd_mixed * 1e3:7.2f} ms   (more encoder work: TI rows)")
    consumed = args.batch_size / clipnd_mixed
    produced = collator_rate(lazy_images(rows), mixed, args.batch_size, workers=2)
    print(
        f"step consumes {consumed:8.0f} examples/s; collator (2 workers, 9 tasks) produces {produced:8.0f} examples/s"
    )
    print(f"collator / step ratio: {produced / consumed:.1f}x")


if __name__ == "__main__":
    main()
