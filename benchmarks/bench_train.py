"""Benchmark whole training epochs on the tiny recipe against the bare training step, in one run.

    python benchmarks/bench_train.py --instances 4000 --epochs 3 --work .bench/train

On one synthetic release and the tiny CLIP, with the ``tiny-cpu`` recipe (batch 16, all nine tasks, one torch
thread), measures mentions per second of:

- ``step``: forward, backward and AdamW alone, on the recipe's batches collated in advance (bench_step's loop);
- ``epochs``: `train()` itself, for each DataLoader worker count asked for: data loading, collation, the
  loss's counters, clipping, the schedule and the progress bar included (validation and checkpoints off; the
  rate is the training summary's ``train_mentions_per_second``).

Prints each rate and epochs / step: near 1 means data loading is not the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import datasets
import torch
from accelerate.state import AcceleratorState, GradientState
from bench_eval import build
from bench_step import timed_steps

from m3el_hf.data.loading import load_topic_splits
from m3el_hf.json_files import read_json
from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.tasks import TOPICS
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig, recipe_path
from m3el_hf.training.loop import train


def epoch_rate(config: TrainConfig) -> tuple[float, dict]:
    """Mentions per second of `train(config)`, and its summary's counts."""
    summary = read_json(train(config) / SUMMARY_NAME)
    AcceleratorState._reset_state(reset_partial_state=True)  # the next train() starts like a new process
    GradientState._reset_state()
    return summary["throughput"]["train_mentions_per_second"], summary["mentions"]


def step_rate(config: TrainConfig, steps: int) -> float:
    """Mentions per second of bare steps on the recipe's first batches (same collator, same batch size)."""
    collator = M3ELCollator.from_pretrained(config.model, tasks=config.tasks, seed=config.seed)
    rows = datasets.concatenate_datasets(list(load_topic_splits(config.data, config.topics, "train").values()))
    rows = rows.shuffle(seed=config.seed)
    size = config.per_device_batch_size
    batches = [collator([rows[j] for j in range(i, i + size)]) for i in range(0, 20 * size, size)]
    mentions = sum(len(batch["labels"]) for batch in batches) / len(batches)
    return mentions / timed_steps(CLIPNDModel.from_pretrained(config.model), batches, steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="Bare steps timed (after 5 warm-up steps).")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers to try.")
    parser.add_argument("--work", type=Path, default=Path(".bench/train"))
    args = parser.parse_args(argv)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}")

    data, model = build(args.work, args.instances)
    recipe = recipe_path("tiny-cpu")
    base = TrainConfig.from_yaml(recipe, model=str(model), data=str(data), output_dir=args.work / "run")
    torch.set_num_threads(base.cpu_threads or torch.get_num_threads())
    step = step_rate(base, args.steps)
    print(f"recipe tiny-cpu: batch {base.per_device_batch_size}, {torch.get_num_threads()} torch thread(s)")
    print(f"bare step:                {step:8.0f} mentions/s")
    for workers in args.workers:
        config = TrainConfig.from_yaml(
            recipe,
            model=str(model),
            data=str(data),
            output_dir=args.work / f"run-{workers}",
            topics=TOPICS,
            epochs=args.epochs,
            eval_split=None,
            save_every=10**9,
            num_workers=workers,
        )
        rate, mentions = epoch_rate(config)
        print(
            f"{args.epochs} epochs, {workers} worker(s): {rate:8.0f} mentions/s   epochs / step = {rate / step:.2f}"
            f"   ({mentions['trained']} mentions trained, {mentions['dropped_missing_image']} dropped)"
        )


if __name__ == "__main__":
    main()
