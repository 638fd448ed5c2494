"""Benchmark the cached evaluator against naive per-candidate encoding and the encoder floor, in one run.

    python benchmarks/bench_eval.py --instances 2000 --work .bench/eval

On the same synthetic release (entities recur across candidate lists) and the same tiny model, times:

- ``cached``: `evaluate_model`, all nine tasks, protocol candidates;
- ``naive``: per task, every mention and every candidate occurrence tokenised / decoded / encoded again
  (batched, `model.encode` for fusion), then ranked with the same metrics;
- ``floor``: the cached run's encoder forward passes alone (its recorded inputs replayed), i.e. one pass per
  unique text and image; and the floor plus the run's tokenising, image decoding and image processing.

Prints each time, naive / cached, and the overhead of cached over each floor.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import datasets
import torch
from transformers import CLIPConfig, CLIPModel

from m3el_hf.data.loading import load_topic_splits
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.metrics import ranking_metrics
from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import FastImagePreprocessor, load_processor
from m3el_hf.modeling.tiny import build_tiny_clip
from m3el_hf.tasks import TASKS, TOPICS


def build(work: Path, instances: int) -> tuple[Path, Path]:
    """Synthesise and prepare the release and build the tiny model, unless a previous run did."""
    data, model = work / f"m3el-{instances}", work / "tiny-clip"
    if not (data / "README.md").exists():
        synthesize(SynthConfig(out=work / f"raw-{instances}", instances=instances, seed=0, overwrite=True))
        prepare(PrepareConfig(raw=work / f"raw-{instances}", out=data, overwrite=True))
    if not (model / "config.json").exists():
        build_tiny_clip(model, seed=0)
    return data, model


def build_vit_b_32(work: Path, tiny: Path) -> Path:
    """A random CLIP of ViT-B/32's shape (224×224 images), with the tiny model's tokenizer; offline."""
    folder = work / "vit-b-32"
    if not (folder / "config.json").exists():
        tokenizer, image_processor = load_processor(tiny)
        text = {k: getattr(CLIPModel.from_pretrained(tiny).config.text_config, k) for k in _TOKEN_IDS}
        torch.manual_seed(0)
        CLIPModel(CLIPConfig(text_config={**text, "vocab_size": len(tokenizer)})).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        size = CLIPConfig().vision_config.image_size
        image_processor.size, image_processor.crop_size = {"shortest_edge": size}, {"height": size, "width": size}
        image_processor.save_pretrained(folder)
    return folder


_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def naive(model, tokenizer, image_processor, dataset, batch_size: int) -> float:
    """Mean accuracy over the nine tasks, encoding every mention and candidate occurrence again per task."""
    collator = M3ELCollator.from_pretrained(model, tokenizer=tokenizer, image_processor=image_processor)
    accuracies = []
    for task in TASKS:
        scores, gold = [], []
        for start in range(0, dataset.num_rows, batch_size):
            rows = dataset[start : start + batch_size]
            for i, candidates in enumerate(rows["candidates"]):
                mention_text = collator.templates.mention_text(rows["mention"][i], rows["sentence"][i])
                mention, mention_ok = _encode(model, collator, [mention_text], [rows["mention_image"][i]], task.mention)
                texts = [collator.templates.entity_text(candidate) for candidate in candidates]
                entities, usable = _encode(model, collator, texts, rows["candidate_images"][i], task.entity)
                if not mention_ok or rows["label"][i] not in usable:
                    continue  # excluded: the mention or the gold lacks a needed image
                row_scores = torch.full((len(candidates),), float("-inf"))
                row_scores[usable] = entities @ mention[0]
                scores.append(row_scores)
                gold.append(rows["label"][i])
        accuracies.append(ranking_metrics(scores, gold)["accuracy"])
    return sum(accuracies) / len(accuracies)


def _encode(model, collator: M3ELCollator, texts: list[str], images: list, modality: str):
    """`model.encode` of the rows usable for `modality` (those with an image if it needs one), and their indices."""
    usable = [i for i, image in enumerate(images) if image is not None or "I" not in modality]
    if not usable:
        return None, usable
    kwargs = {}
    if "T" in modality:
        tokens = collator.tokenizer(
            [texts[i] for i in usable],
            padding="longest",
            truncation=True,
            max_length=collator.max_length,
            return_tensors="pt",
        )
        kwargs.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    if "I" in modality:
        kwargs["pixel_values"] = FastImagePreprocessor(collator.image_processor)([images[i] for i in usable])
    return model.encode(**kwargs), usable


class Recorder:
    """Wraps one cached run's encoders and preprocessing: records every forward input; times tokenising, image
    decoding and image processing (the unavoidable work besides the forward passes)."""

    def __init__(self, model, tokenizer) -> None:
        self.forward_inputs: list[tuple[str, tuple]] = []
        self.prep_seconds = 0.0
        self.encode_text, self.encode_image = model.encode_text, model.encode_image
        self.model, self._tokenizer = model, tokenizer
        model.encode_text = lambda *inputs: self._forward("text", inputs)
        model.encode_image = lambda *inputs: self._forward("image", inputs)
        self._decode, self._preprocess = datasets.Image.decode_example, FastImagePreprocessor.__call__
        datasets.Image.decode_example = lambda *args, **kwargs: self._timed(self._decode, *args, **kwargs)
        FastImagePreprocessor.__call__ = lambda *args, **kwargs: self._timed(self._preprocess, *args, **kwargs)

    def _forward(self, tower: str, inputs: tuple) -> torch.Tensor:
        self.forward_inputs.append((tower, inputs))
        return (self.encode_text if tower == "text" else self.encode_image)(*inputs)

    def tokenizer(self, *args, **kwargs):
        return self._timed(self._tokenizer, *args, **kwargs)

    def _timed(self, function, *args, **kwargs):
        start = time.perf_counter()
        out = function(*args, **kwargs)
        self.prep_seconds += time.perf_counter() - start
        return out

    def replay(self) -> tuple[float, int, int]:
        """Seconds to run the recorded forward passes again, and how many text and image rows they hold."""
        del self.model.encode_text, self.model.encode_image  # back to the class methods
        datasets.Image.decode_example, FastImagePreprocessor.__call__ = self._decode, self._preprocess
        start = time.perf_counter()
        for tower, inputs in self.forward_inputs:
            (self.encode_text if tower == "text" else self.encode_image)(*inputs)
        seconds = time.perf_counter() - start
        rows = {
            tower: sum(len(inputs[0]) for t, inputs in self.forward_inputs if t == tower) for tower in ("text", "image")
        }
        return seconds, rows["text"], rows["image"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path(".bench/eval"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="Cached runs (and floors); the best is reported.")
    parser.add_argument("--shape", choices=["tiny", "vit-b-32"], default="tiny", help="Model to evaluate.")
    parser.add_argument("--skip-naive", action="store_true", help="Leave out the (slow) naive evaluator.")
    args = parser.parse_args(argv)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )

    data, model_path = build(args.work, args.instances)
    if args.shape == "vit-b-32":
        model_path = build_vit_b_32(args.work, model_path)
    dataset = datasets.concatenate_datasets(list(load_topic_splits(str(data), TOPICS, args.split).values()))
    occurrences = sum(map(len, dataset["candidates"]))
    model = CLIPNDModel.from_pretrained(model_path).eval()
    tokenizer, image_processor = load_processor(model_path)
    print(f"data: {dataset.num_rows} instances ({args.split}), {occurrences} candidate occurrences, 9 tasks")

    with torch.inference_mode():
        evaluate_model(model, tokenizer, image_processor, dataset.select(range(64)), progress=False)  # warm-up
        cached, floor, prep = [], [], []
        for _ in range(args.repeats):
            recorder = Recorder(model, tokenizer)
            start = time.perf_counter()
            result = evaluate_model(
                model, recorder.tokenizer, image_processor, dataset, batch_size=args.batch_size, progress=False
            )
            cached.append(time.perf_counter() - start)
            seconds, n_texts, n_images = recorder.replay()
            floor.append(seconds)
            prep.append(recorder.prep_seconds)
        if not args.skip_naive:
            start = time.perf_counter()
            naive_accuracy = naive(model, tokenizer, image_processor, dataset, args.batch_size)
            naive_time = time.perf_counter() - start
    cached, floor, prep = min(cached), min(floor), min(prep)
    print(f"model: {args.shape} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    print(f"unique inputs encoded by the cached run: {n_texts} texts, {n_images} images")
    print(f"timings: best of {args.repeats} (cached, floors), naive once")
    print(f"cached evaluator:                  {cached:8.2f} s   mean accuracy {result.mean_accuracy():.6f}")
    if not args.skip_naive:
        print(f"naive per-candidate:               {naive_time:8.2f} s   mean accuracy {naive_accuracy:.6f}")
        print(f"naive / cached = {naive_time / cached:.1f}x")
    print(f"floor, forward passes only:        {floor:8.2f} s   cached overhead = {100 * (cached / floor - 1):.0f}%")
    overhead = 100 * (cached / (floor + prep) - 1)
    print(f"  + tokenise/decode/process:       {floor + prep:8.2f} s   cached overhead = {overhead:.0f}%")


if __name__ == "__main__":
    main()
