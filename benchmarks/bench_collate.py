"""Collation per mention at CLIP's 224 px: a release prepared with ``--image-size 224`` against the photos as they are.

    TOKENIZERS_PARALLELISM=false python benchmarks/bench_collate.py --instances 2000 --work .bench/collate

Writes (once, kept under --work) a photo-like synthetic release (``m3el-hf synth --images photo``: Commons-like
sizes and formats) and prepares it twice, as it is and with ``--image-size 224``. Then collates the train
split on one core (torch with one thread, the tokenizer without its thread pool), all 9 tasks mixed, batches
of 128, with ViT-B/32's image processor settings (shortest edge 224, bicubic, 224×224 centre crop) and the tiny
checkpoint's tokenizer:

- baseline: the release as it is, float32 ``pixel_values`` (every photo decoded in full and resized);
- the release prepared at 224, float32 ``pixel_values`` (a loop that normalises in the worker);
- the release prepared at 224, uint8 pixels (``M3ELCollator.uint8_pixels``, as the trainer runs it), whose
  normalisation (``normalize_pixels``) runs on the accelerator.

Prints ms per mention in CPU time (``time.process_time``) and wall time (best of --rounds passes each), then
where the time goes: one more pass with the functions the collator calls wrapped (`PHASES`), each with its
calls, CPU ms per mention and per call; a phase never called in the whole run is an error, so the breakdown
cannot silently time code the collator no longer runs. Then the ratio to the baseline, and the cores that
12,000 mentions/s (a ViT-B/32 CLIP_ND step on one H100 at 40% MFU) would need.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: no tokenizer thread pool

import datasets
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import m3el_hf.modeling.collator as collator_module
import m3el_hf.modeling.processing as processing_module
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.modeling.collator import M3ELCollator, lazy_images
from m3el_hf.modeling.processing import FastImagePreprocessor, load_processor
from m3el_hf.modeling.tiny import build_tiny_clip

GPU_MENTIONS_PER_S = 12_000
TARGET_MS = 0.55  # CPU ms per mention at 224 px, uint8 (the trainer's)


def _decoder(args: tuple) -> str:
    return "decode PNG (pyspng; RGBA onto white)" if args[0][:4] == b"\x89PNG" else "decode JPEG (simplejpeg)"


# (module or class as the collator looks the name up, attribute, phase name or a function of the arguments).
PHASES: tuple[tuple[object, str, str | Callable[[tuple], str]], ...] = (
    (collator_module, "tokenize", "tokenise (distinct texts once)"),
    (processing_module, "direct_size", "headers (direct_size)"),
    (processing_module, "decode_rgb", _decoder),
    (processing_module, "open_image", "decode with PIL (open_image)"),
    (FastImagePreprocessor, "_prepare", "RGB, resize, crop with PIL (_prepare)"),
    (FastImagePreprocessor, "normalize", "normalise (table)"),
)


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
    """Wraps `PHASES` so that their calls, CPU and wall seconds are counted per phase; `restore` unwraps them."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.called: set[str] = set()  # the attributes of PHASES that ran
        self._wrapped: list[tuple[object, str, object]] = []
        for owner, attribute, name in PHASES:
            self._wrap(owner, attribute, name)

    def _wrap(self, owner: object, attribute: str, name: str | Callable[[tuple], str]) -> None:
        function = owner.__dict__.get(attribute)  # as defined there, not inherited: what the collator looks up
        if function is None:
            return  # never called: reported at the end
        self._wrapped.append((owner, attribute, function))

        def timed(*args, **kwargs):
            phase = name if isinstance(name, str) else name(args)
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.cpu[phase] += time.process_time() - cpu
                self.wall[phase] += time.perf_counter() - wall
                self.calls[phase] += 1
                self.called.add(attribute)

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


def collate_all(collator: M3ELCollator, rows: list[dict], batch_size: int) -> tuple[float, float, int, int]:
    """CPU and wall seconds to collate `rows` in batches, the mentions kept and the images they used."""
    mentions = images = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(rows), batch_size):
        batch = collator(rows[i : i + batch_size])
        mentions += batch["labels"].numel()
        images += sum(len(batch[k]) for k in ("mention_image_rows", "entity_image_rows") if k in batch)
    return time.process_time() - cpu, time.perf_counter() - wall, mentions, images


def measure(name: str, collator: M3ELCollator, rows: list[dict], args: argparse.Namespace, seen: set[str]) -> float:
    """Print the best of `args.rounds` passes and where one more pass's time went; return CPU ms per mention.

    Adds the attributes of `PHASES` that ran to `seen`.
    """
    passes = [collate_all(collator, rows, args.batch_size) for _ in range(args.rounds)]
    cpu, wall = min(p[0] for p in passes), min(p[1] for p in passes)
    _, _, mentions, images = passes[0]
    watch = Stopwatch()
    try:
        timed_cpu, _, _, _ = collate_all(collator, rows, args.batch_size)
    finally:
        watch.restore()
    seen.update(watch.called)
    per_mention = cpu / mentions * 1e3
    print(f"\n{name}: {per_mention:.3f} ms CPU, {wall / mentions * 1e3:.3f} ms wall per mention")
    print(f"  ({mentions} mentions, {images / mentions:.2f} images each; best of {args.rounds} passes)")
    print(f"  {'where the time goes (one more pass)':42s} {'calls':>6s} {'CPU ms/mention':>15s} {'ms/call':>8s}")
    for phase in sorted(watch.calls, key=watch.cpu.get, reverse=True):
        spent, calls = watch.cpu[phase], watch.calls[phase]
        print(f"  {phase:42s} {calls:6d} {spent / mentions * 1e3:15.3f} {spent / calls * 1e3:8.3f}")
    rest = timed_cpu - sum(watch.cpu.values())
    print(f"  {'the rest (rows, templates, copies, checks)':42s} {'':6s} {rest / mentions * 1e3:15.3f}")
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

    seen: set[str] = set()
    baseline = measure("baseline: photos as they are, float32", collator(False), rows(folders["as is"]), args, seen)
    prepared_rows = rows(folders["224"])
    floats = measure("prepared at 224, float32 pixel_values", collator(False), prepared_rows, args, seen)
    compact = measure("prepared at 224, uint8 pixels (the trainer's)", collator(True), prepared_rows, args, seen)
    print(f"\nratio baseline / prepared (CPU): {baseline / floats:.1f}x (float32), {baseline / compact:.1f}x (uint8)")
    for name, ms in (("float32", floats), ("uint8", compact)):
        cores = GPU_MENTIONS_PER_S * ms / 1e3
        print(
            f"{name}: one core collates {1e3 / ms:,.0f} mentions/s; 16 cores {16e3 / ms:,.0f}/s; "
            f"{GPU_MENTIONS_PER_S:,} mentions/s need {cores:.1f} cores"
        )
    print(f"target: {TARGET_MS} ms CPU per mention at 224 px (uint8): {'met' if compact <= TARGET_MS else 'missed'}")
    never = [attribute for _, attribute, _ in PHASES if attribute not in seen]
    if never:
        raise SystemExit(f"the collator never called {', '.join(never)}: update PHASES to what it calls")


if __name__ == "__main__":
    main()
