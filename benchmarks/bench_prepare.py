"""Benchmark ``prepare`` against the I/O floor and the decode floor measured in the same run.

    python benchmarks/bench_prepare.py --instances 79625 --work .bench/prepare
    python benchmarks/bench_prepare.py --instances 400 --topics movies --images photo --num-proc 1 \
        --work .bench/prepare-photo [--image-size 224]

Prints: synthetic release size; the I/O floor (reading every JSON and image byte once, best of 2); the decode
floor (every image file decoded once with PIL, full size, in this process: CPU seconds), and with
``--image-size`` the reduced-scale decode prepare's resize starts from; then prepare in a child process: wall
time, CPU time (user + sys) and peak RSS, the ratios, and the time until ``load_dataset(..., streaming=True)``
yields its first example. CPU time counts the child and the processes it waited for: prepare's worker
processes are started by a fork server, which it does not wait for, so CPU figures want ``--num-proc 1``.
Each run prepares from scratch (no cache kept from a run before); the release's files are in the page cache,
as the floors read them just before. ``--images photo`` synthesises Commons-like photos.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.tasks import TOPICS


def io_floor(root: Path) -> tuple[float, int, int]:
    """Seconds to read every file of the release once, the number of image files and the bytes read."""
    start, images, size = time.perf_counter(), 0, 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                size += len(f.read())
            images += dirpath != str(root)
    return time.perf_counter() - start, images, size


def _decode_files(paths: list[str], draft_shorter: int | None) -> float:
    """CPU seconds to decode each file once with PIL: full size, or JPEGs at the reduced DCT scale whose
    shorter side is no less than `draft_shorter` (where prepare's `--image-size` resize starts)."""
    import PIL.Image

    start = time.process_time()
    for path in paths:
        with PIL.Image.open(path) as image:
            if draft_shorter and image.format == "JPEG" and min(image.size) > draft_shorter:
                scale = draft_shorter / min(image.size)
                image.draft(image.mode, (round(image.width * scale), round(image.height * scale)))
            image.load()
    return time.process_time() - start


def decode_floor(root: Path, draft_shorter: int | None = None) -> tuple[float, int]:
    """CPU seconds to decode every image of the release once (`_decode_files`), and the number of images."""
    paths = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names if d != str(root))
    return _decode_files(paths, draft_shorter), len(paths)


def run_child(code: str, cwd: Path) -> tuple[float, float, float]:
    """Run Python `code` in a child; return its wall seconds, CPU seconds (user + sys) and peak RSS in GiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if after.ru_maxrss <= before.ru_maxrss:
        print("  (peak RSS of this child is not above an earlier child's; figure is an upper bound)")
    return wall, cpu, after.ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=79_625)
    parser.add_argument("--topics", nargs="+", default=None, help="Topics to synthesise and prepare (default: all).")
    parser.add_argument("--work", type=Path, default=Path(".bench/prepare"))
    parser.add_argument("--max-image-side", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--images", choices=("drawn", "photo"), default="drawn")
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args(argv)

    work = args.work.resolve()
    topics = tuple(args.topics) if args.topics else TOPICS
    name = f"raw-{args.instances}" if args.images == "drawn" else f"raw-photo-{args.instances}"
    raw = work / (name if topics == TOPICS else f"{name}-{'-'.join(topics)}")
    if not (raw / f"{topics[0]}.json").exists():
        start = time.perf_counter()
        synthesize(
            SynthConfig(out=raw, instances=args.instances, seed=0, topics=topics, images=args.images, overwrite=True)
        )
        print(f"synth: {args.instances} instances in {time.perf_counter() - start:.1f} s")
    floor, images, size = io_floor(raw)
    floor = min(floor, io_floor(raw)[0])
    print(f"release: {images} images, {size / 2**20:.1f} MiB")
    print(f"I/O floor (read every JSON and image byte once): {floor:.2f} s")
    decode, files = decode_floor(raw)
    print(f"decode floor (every image file decoded once with PIL, full size): {decode:.1f} s CPU, {files} files")
    if args.image_size:
        drafted, _ = decode_floor(raw, 2 * args.image_size)
        print(f"  the same, JPEGs at the reduced scale --image-size starts from: {drafted:.1f} s CPU")

    out = work / "m3el"
    shutil.rmtree(out, ignore_errors=True)
    side = f", max_image_side={args.max_image_side}" if args.max_image_side else ""
    side += f", image_size={args.image_size}" if args.image_size else ""
    side += f", num_proc={args.num_proc}, topics={topics!r}"
    code = (
        "from pathlib import Path\n"
        "from m3el_hf.data.prepare import PrepareConfig, prepare\n"
        f"prepare(PrepareConfig(raw=Path({str(raw)!r}), out=Path({str(out)!r}){side}))\n"
    )
    wall, cpu, peak = run_child(code, work)
    print(f"prepare: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.2f} GiB")
    print(f"ratio prepare / I/O floor (wall): {wall / floor:.1f}x")
    print(f"ratio prepare / decode floor (CPU): {cpu / decode:.2f}x")

    # The child leaves with os._exit: a half-read pyarrow scanner at interpreter shutdown can abort or hang
    # the process (apache/arrow#45214, huggingface/datasets#7467), even after `del` and `gc.collect()`.
    code = (
        "import os, sys, time, datasets\n"
        "start = time.perf_counter()\n"
        f"stream = datasets.load_dataset('m3el', {topics[0]!r}, split='train', streaming=True)\n"
        "examples = iter(stream)\n"
        "next(examples)\n"
        "print(f'streaming first example: {time.perf_counter() - start:.2f} s')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    run_child(code, work)


if __name__ == "__main__":
    main()
