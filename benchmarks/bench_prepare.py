"""Benchmark ``prepare`` at full M³EL scale against the I/O floor measured in the same run.

    python benchmarks/bench_prepare.py --instances 79625 --work .bench/prepare
    python benchmarks/bench_prepare.py --instances 8000 --images photo --image-size 224 --work .bench/prepare-photo

Prints: synthetic release size, the I/O floor (reading every JSON and image byte once),
prepare wall time and peak RSS (in a child process), their ratio, and the time until
``load_dataset(..., streaming=True)`` yields its first example. Both timings read a warm page
cache (the release was just written or read), so the ratio compares CPU work, not disk speed.

With ``--image-size``, the floor that matters is decoding: it also prints the decode floor (every image
file decoded once, JPEGs at the reduced DCT scale prepare uses, on as many processes as prepare's
``num_proc``) and the ratio of prepare to it. ``--images photo`` synthesises Commons-like photos.
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


def io_floor(root: Path) -> tuple[float, int, int]:
    """Seconds to read every file of the release once, the number of image files and the bytes read."""
    start, images, size = time.perf_counter(), 0, 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                size += len(f.read())
            images += dirpath != str(root)
    return time.perf_counter() - start, images, size


def _decode_files(paths: list[str], size: int) -> int:
    """Decode each file once as prepare's `--image-size` path must (JPEG drafted); return the pixels decoded."""
    import PIL.Image

    pixels = 0
    for path in paths:
        with PIL.Image.open(path) as image:
            if image.format == "JPEG" and min(image.size) > 2 * size:
                scale = 2 * size / min(image.size)
                image.draft(image.mode, (round(image.width * scale), round(image.height * scale)))
            image.load()
            pixels += image.width * image.height
    return pixels


def decode_floor(root: Path, size: int, processes: int) -> tuple[float, int]:
    """Seconds to decode every image of the release once (`_decode_files`) on `processes`, and the images."""
    from concurrent.futures import ProcessPoolExecutor

    paths = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names if d != str(root))
    start = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_decode_files, [paths[i::processes] for i in range(processes)], [size] * processes))
    return time.perf_counter() - start, len(paths)


def run_child(code: str, cwd: Path) -> tuple[float, float]:
    """Run Python `code` in a child; return its wall seconds and peak RSS in GiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS of this child is not above an earlier child's; figure is an upper bound)")
    return wall, peak / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=79_625)
    parser.add_argument("--work", type=Path, default=Path(".bench/prepare"))
    parser.add_argument("--max-image-side", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--images", choices=("drawn", "photo"), default="drawn")
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args(argv)

    work = args.work.resolve()
    raw = work / (f"raw-{args.instances}" if args.images == "drawn" else f"raw-photo-{args.instances}")
    if not (raw / "movies.json").exists():
        start = time.perf_counter()
        synthesize(SynthConfig(out=raw, instances=args.instances, seed=0, images=args.images, overwrite=True))
        print(f"synth: {args.instances} instances in {time.perf_counter() - start:.1f} s")
    floor, images, size = io_floor(raw)
    floor = min(floor, io_floor(raw)[0])
    print(f"release: {images} images, {size / 2**20:.1f} MiB")
    print(f"I/O floor (read every JSON and image byte once): {floor:.2f} s")
    if args.image_size:
        decode, files = decode_floor(raw, args.image_size, args.num_proc)
        print(f"decode floor (every image file decoded once, {args.num_proc} processes): {decode:.1f} s, {files} files")

    out = work / "m3el"
    shutil.rmtree(out, ignore_errors=True)
    side = f", max_image_side={args.max_image_side}" if args.max_image_side else ""
    side += f", image_size={args.image_size}" if args.image_size else ""
    side += f", num_proc={args.num_proc}"
    code = (
        "from pathlib import Path\n"
        "from m3el_hf.data.prepare import PrepareConfig, prepare\n"
        f"prepare(PrepareConfig(raw=Path({str(raw)!r}), out=Path({str(out)!r}){side}))\n"
    )
    wall, peak = run_child(code, work)
    print(f"prepare: {wall:.1f} s wall, peak RSS {peak:.2f} GiB")
    print(f"ratio prepare / I/O floor: {wall / floor:.1f}x")
    if args.image_size:
        print(f"ratio prepare / decode floor: {wall / decode:.2f}x")

    # The child leaves with os._exit: a half-read pyarrow scanner at interpreter shutdown can abort or hang
    # the process (apache/arrow#45214, huggingface/datasets#7467), even after `del` and `gc.collect()`.
    code = (
        "import os, sys, time, datasets\n"
        "start = time.perf_counter()\n"
        "stream = datasets.load_dataset('m3el', 'movies', split='train', streaming=True)\n"
        "examples = iter(stream)\n"
        "next(examples)\n"
        "print(f'streaming first example: {time.perf_counter() - start:.2f} s')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    run_child(code, work)


if __name__ == "__main__":
    main()
