"""Benchmark a CLIP_ND training step against the plain ``CLIPModel(..., return_loss=True)`` step.

    python benchmarks/bench_step.py --batch-size 64 --steps 30

Same tiny model weights, same examples, same optimiser, same run. Both steps encode B mention
texts and B entity images (task T-I, so the work is the same); the CLIP_ND step adds the MEL
machinery (row scatter, duplicate-Qid masking, the distributed-ready loss). Collation is timed
separately: collator throughput with 2 DataLoader workers against what the step consumes.

With ``--shape vit-b-32`` (for a GPU: ``--device cuda --bf16 --peak-tflops 989`` on an H100 SXM), the same
two steps run on a randomly initialised CLIP of ViT-B/32's shape (the paper's model, 151M parameters,
224×224 images, 32-token texts) on random inputs, and it prints samples/s and the model FLOPs utilisation
(FLOPs of one step counted by torch's FlopCounterMode, over the device's dense peak).
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
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel

from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.modeling.collator import M3ELCollator, lazy_images
from m3el_hf.modeling.configuration_clipnd import CLIPNDConfig
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.tiny import build_tiny_clip


def timed_steps(
    model: torch.nn.Module, batches: list[dict], steps: int, warmup: int = 5, dtype: torch.dtype | None = None
) -> float:
    """Seconds per optimisation step (forward, backward, AdamW) averaged over `steps` after `warmup`.

    `dtype` (e.g. bfloat16) runs forward and backward under autocast; weights and AdamW stay float32.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the trainer's
    device = next(model.parameters()).device
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _synchronize(device)
            start = time.perf_counter()
        batch = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(model: torch.nn.Module, batch: dict, dtype: torch.dtype | None) -> int:
    """FLOPs of one forward and backward pass of `model` on `batch` (matrix products, as torch counts them)."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def vit_b_32_batch(config: CLIPConfig, batch_size: int, text_length: int, device: str, seed: int) -> dict:
    """A random CLIP_ND T-I batch for a CLIP of `config`'s shape: texts ending in EOS, 224×224 images."""
    generator = torch.Generator().manual_seed(seed)
    text = config.text_config
    ids = torch.randint(1, text.eos_token_id - 1, (batch_size, text_length), generator=generator)
    ids[:, -1] = text.eos_token_id
    pixels = torch.randn(batch_size, 3, config.vision_config.image_size, config.vision_config.image_size)
    qids = torch.arange(batch_size)
    batch = {
        "mention_input_ids": ids,
        "mention_attention_mask": torch.ones_like(ids),
        "entity_pixel_values": pixels.mul_(0.5),
        "labels": qids,
        "mention_qids": qids,
        "entity_qids": qids,
        "return_loss": True,
    }
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def main_vit_b_32(args: argparse.Namespace) -> None:
    """Plain CLIPModel vs CLIPNDModel steps at ViT-B/32's shape: samples/s, ratio and MFU."""
    torch.manual_seed(0)
    config = CLIPConfig()  # transformers' defaults are ViT-B/32's shapes (openai/clip-vit-base-patch32)
    dtype = torch.bfloat16 if args.bf16 else None
    batches = [vit_b_32_batch(config, args.batch_size, 32, args.device, seed) for seed in range(2)]
    plain = CLIPModel(config).to(args.device)
    clipnd = CLIPNDModel(CLIPNDConfig.from_clip_config(config)).to(args.device)
    clipnd.load_state_dict(plain.state_dict())
    flops = step_flops(clipnd, batches[0], dtype)
    times = [
        (
            timed_steps(plain, [plain_batch(b) for b in batches], args.steps, warmup=3, dtype=dtype),
            timed_steps(clipnd, batches, args.steps, warmup=3, dtype=dtype),
        )
        for _ in range(3)
    ]
    plain_time, clipnd_time = (min(t[i] for t in times) for i in range(2))
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"machine: {name}, torch {torch.__version__}, {'bf16 autocast' if dtype else 'float32'}")
    parameters = sum(p.numel() for p in plain.parameters()) / 1e6
    print(f"ViT-B/32-shaped CLIP ({parameters:.1f}M parameters), batch {args.batch_size}")
    print(f"plain CLIPModel step:  {plain_time * 1e3:8.1f} ms  {args.batch_size / plain_time:8.1f} samples/s")
    print(
        f"CLIPNDModel step (T-I): {clipnd_time * 1e3:7.1f} ms  {args.batch_size / clipnd_time:8.1f} samples/s   "
        f"ratio {clipnd_time / plain_time:.3f}x"
    )
    achieved = flops / clipnd_time
    mfu = (
        f", MFU {100 * achieved / (args.peak_tflops * 1e12):.1f}% of {args.peak_tflops:g} TFLOP/s"
        if args.peak_tflops
        else ""
    )
    print(f"model FLOPs per step {flops / 1e12:.3f} TFLOP; achieved {achieved / 1e12:.2f} TFLOP/s{mfu}")


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
    """Examples per second the DataLoader delivers in steady state: one warm-up pass starts the workers."""
    loader = DataLoader(
        rows, batch_size=batch_size, collate_fn=collator, num_workers=workers, persistent_workers=workers > 0
    )
    rates = []
    for _ in range(3):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["labels"]) + int(batch["num_dropped"])
        rates.append(n / (time.perf_counter() - start))
    return max(rates[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--instances", type=int, default=1500)
    parser.add_argument("--shape", choices=["tiny", "vit-b-32"], default="tiny", help="Model shape to time.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="vit-b-32 only.")
    parser.add_argument("--bf16", action="store_true", help="vit-b-32 only: bf16 autocast.")
    parser.add_argument("--peak-tflops", type=float, help="vit-b-32 only: the device's dense peak, for MFU.")
    args = parser.parse_args(argv)
    if args.shape == "vit-b-32":
        main_vit_b_32(args)
        return
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
