"""Entity-index build throughput against the encoder's forward floor, measured in the same run.

    python benchmarks/bench_index_build.py --instances 1200 --work .bench/index-build

Builds (once, cached under --work) a synthetic release and the tiny random CLIP, then times
`EntityIndex.build` on its ``all-kb`` config (entity modality TI: text and image encoded and fused) against
the floor: the same model's `encode_text` and `encode_image` on the entities' inputs already tokenised and
preprocessed in memory, in the same batches. The difference is reading the KB, decoding and preprocessing
images, tokenising, fusing and building the FAISS index. One torch thread; best of --rounds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import datasets
import torch
from bench_eval import build  # the same cached release and tiny CLIP

from m3el_hf.images import open_image
from m3el_hf.linking import EntityIndex, EntityLinker
from m3el_hf.modeling.processing import tokenize


@torch.inference_mode()
def forward_floor(linker: EntityLinker, kb: datasets.Dataset, batch_size: int) -> float:
    """Seconds of the model's two encoders alone on the KB's inputs, prepared beforehand."""
    texts = [linker.encoders.templates.entity_text(row) for row in kb]
    images = [open_image(row["image"]) for row in kb.cast_column("image", datasets.Image(decode=False))]
    batches = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(linker.encoders.tokenizer, texts[start : start + batch_size], linker.encoders.max_length)
        batches.append((tokens, linker.encoders.preprocess(images[start : start + batch_size])))
    begin = time.perf_counter()
    for tokens, pixels in batches:
        linker.model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        linker.model.encode_image(pixels)
    return time.perf_counter() - begin


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1200)
    parser.add_argument("--work", type=Path, default=Path(".bench/index-build"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    data, checkpoint = build(args.work.resolve(), args.instances)
    kb = datasets.load_dataset(str(data), "all-kb", split="kb")
    kb = kb.filter(lambda image: image is not None, input_columns="image")  # TI needs the image: like for like
    linker = EntityLinker.from_pretrained(checkpoint, device="cpu")
    builds, floors = [], []
    for _ in range(args.rounds):
        begin = time.perf_counter()
        EntityIndex.build(linker, kb, modality="TI", batch_size=args.batch_size, progress=False)
        builds.append(time.perf_counter() - begin)
        floors.append(forward_floor(linker, kb, args.batch_size))
    built, floor = min(builds), min(floors)
    print(f"KB: {len(kb)} entities with an image ({args.instances}-instance synthetic release), tiny CLIP, TI")
    print(f"index build: {built:.2f} s, {len(kb) / built:,.0f} entities/s")
    print(f"forward floor (encode_text + encode_image on prepared inputs): {floor:.2f} s, {len(kb) / floor:,.0f}/s")
    print(f"ratio build / floor: {built / floor:.1f}x")


if __name__ == "__main__":
    main()
