"""Collation per mention at CLIP's 224 px: a release prepared with ``--image-size 224`` against the photos as they are.

    python benchmarks/bench_collate.py --instances 2000 --work .bench/collate

Writes (once, kept under --work) a photo-like synthetic release (``m3el-hf synth --images photo``: Commons-like
sizes and formats) and prepares it twice, as it is and with ``--image-size 224``. Then collates the train
split on one core (torch with one thread), all 9 tasks mixed, batches of 128, with ViT-B/32's image
processor settings (shortest edge 224, bicubic, 224×224 centre crop) and the tiny checkpoint's tokenizer:

- baseline: the release as it is, float32 ``pixel_values`` (every photo decoded in full and resized);
- the release prepared at 224, float32 ``pixel_values`` (a loop that normalises in the worker);
- the release prepared at 224, uint8 pixels (``M3ELCollator.uint8_pixels``, as the trainer runs it), whose
  normalisation (``normalize_pixels``) runs on the accelerator; its CPU cost is printed apart.

Prints ms per mention (best of --rounds), where the time goes, the ratio to the baseline, and the cores
that 12,000 mentions/s (a ViT-B/32 CLIP_ND step on one H100 at 40% MFU) would need.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import datasets
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import m3el_hf.images as images_module
import m3el_hf.modeling.collator as collator_module
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.modeling.collator import M3ELCollator, lazy_images
from m3el_hf.modeling.processing import load_processor
from m3el_hf.modeling.tiny import build_tiny_clip

GPU_MENTIONS_PER_S = 12_000


def vit_b_32_processor() -> CLIPImageProcessorPil:
    """openai/clip-vit-base-patch32's preprocessor settings, built without a download."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        resample=PILImageResampling.BICUBIC,
        crop_size={"height": 224, "width": 224},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


class Stopwatch:
    """Wraps functions so that their total seconds are counted under a name; `restore` unwraps them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._wrapped: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)
        self._wrapped.append((owner, attribute, function))

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, function in reversed(self._wrapped):
            setattr(owner, attribute, function)
        self._wrapped.clear()


def releases(work: Path, instances: int) -> dict[str, Path]:
    """The raw photo-like release and its two prepared folders (made once, then reused)."""
    raw = work / f"raw-photo-{instances}"
    if not (raw / "movies.json").exists():
        start = time.perf_counter()
        synthesize(SynthConfig(out=raw, instances=instances, seed=0, images="photo", overwrite=True))
        print(f"synth: {instances} photo-like instances in {time.perf_counter() - start:.0f} s")
    folders = {"as is": work / f"m3el-{instances}", "224": work / f"m3el-{instances}-224"}
    for name, out in folders.items():
        if not (out / "README.md").exists():
            start = time.perf_counter()
            size = 224 if name == "224" else None
            prepare(PrepareConfig(raw=raw, out=out, image_size=size, overwrite=True, on_error="skip"))
            print(f"prepare ({name}): {time.perf_counter() - start:.0f} s")
    return folders


def collate_all(collator: M3ELCollator, rows: list[dict], batch_size: int) -> tuple[float, int, int]:
    """Seconds to collate `rows` in batches, the mentions kept and the images they used."""
    mentions = images = 0
    start = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        batch = collator(rows[i : i + batch_size])
        mentions += batch["labels"].numel()
        images += sum(len(batch[k]) for k in ("mention_image_rows", "entity_image_rows") if k in batch)
    return time.perf_counter() - start, mentions, images


def measure(name: str, collator: M3ELCollator, rows: list[dict], args: argparse.Namespace) -> float:
    """Print the best of `args.rounds` collation passes and where its time went; return ms per mention."""
    best, parts = None, None
    for _ in range(args.rounds):
        watch = Stopwatch()
        watch.wrap(images_module, "open_image", "decode (datasets' Image decoding)")
        watch.wrap(collator_module, "tokenize", "tokenise")
        fast = collator._fast_images()
        for method, label in (("pixels", "resize, crop, uint8 (pixels)"), ("normalize", "normalise (table)")):
            watch.wrap(fast, method, label)
        try:
            seconds, mentions, images = collate_all(collator, rows, args.batch_size)
        finally:
            watch.restore()
        if best is None or seconds < best[0]:
            best, parts = (seconds, mentions, images), dict(watch.seconds)
    seconds, mentions, images = best
    per_mention = seconds / mentions * 1e3
    print(f"\n{name}: {per_mention:.3f} ms per mention ({mentions} mentions, {images / mentions:.2f} images each)")
    for part, spent in parts.items():
        print(f"  {part:38s} {spent / mentions * 1e3:.3f} ms per mention")
    return per_mention


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path(".bench/collate"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1024, help="Train rows collated per pass.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    folders = releases(work, args.instances)
    checkpoint = work / "tiny-clip"
    if not (checkpoint / "config.json").exists():
        build_tiny_clip(checkpoint, seed=0)
    tokenizer, _ = load_processor(checkpoint)

    def collator(uint8: bool) -> M3ELCollator:
        return M3ELCollator(tokenizer=tokenizer, image_processor=vit_b_32_processor(), uint8_pixels=uint8)

    def rows(folder: Path) -> list[dict]:
        train = lazy_images(datasets.load_dataset(str(folder), "all", split="train"))
        return [train[i] for i in range(min(args.limit, len(train)))]

    baseline = measure("baseline: photos as they are, float32", collator(False), rows(folders["as is"]), args)
    prepared_rows = rows(folders["224"])
    floats = measure("prepared at 224, float32 pixel_values", collator(False), prepared_rows, args)
    compact = measure("prepared at 224, uint8 pixels (the trainer's)", collator(True), prepared_rows, args)
    print(f"\nratio baseline / prepared: {baseline / floats:.1f}x (float32), {baseline / compact:.1f}x (uint8)")
    for name, ms in (("float32", floats), ("uint8", compact)):
        cores = GPU_MENTIONS_PER_S * ms / 1e3
        print(
            f"{name}: one core collates {1e3 / ms:,.0f} mentions/s; 16 cores {16e3 / ms:,.0f}/s; "
            f"{GPU_MENTIONS_PER_S:,} mentions/s need {cores:.1f} cores"
        )


if __name__ == "__main__":
    main()
