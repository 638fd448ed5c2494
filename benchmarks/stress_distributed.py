"""Stress check: short two-process CPU runs, on a machine kept busy, must all end.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/stress_distributed.py --runs 10 --work .bench/stress

Each run is the README's CPU launch line (`accelerate launch --multi_gpu --num_processes 2 ...` with gloo)
of `trainers/train.py` for a few updates of the tiny model, while one busy process per core competes for
the CPU. A run passes when it exits 0 within `--timeout` seconds; a run past it is reported stuck, and the
launcher and its workers are killed. Prints each run's wall time and the count of passes; exits 1 if any
run failed or stuck. Before the release order of `train()` (prepared objects freed, then the process
group destroyed), about 7 in 60 such runs left a rank that never exited.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [
    *("launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
    *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
]


def _busy() -> None:
    while True:
        pass


def _inputs(work: Path) -> tuple[Path, Path]:
    from m3el_hf.data.prepare import PrepareConfig, prepare
    from m3el_hf.data.synth import SynthConfig, synthesize
    from m3el_hf.modeling.tiny import build_tiny_clip

    data, model = work / "m3el", work / "tiny-clip"
    if not data.is_dir():
        raw = synthesize(
            SynthConfig(out=work / "raw", instances=80, seed=5, topics=("movies", "books"), overwrite=True)
        )
        prepare(PrepareConfig(raw=raw, out=data, topics=("movies", "books"), overwrite=True))
    if not model.is_dir():
        build_tiny_clip(model, seed=0)
    return model, data


def _one_run(model: Path, data: Path, out: Path, timeout: float) -> tuple[str, float]:
    argv = [str(Path(sys.executable).with_name("accelerate")), *LAUNCH, str(REPO / "trainers" / "train.py")]
    argv += ["--recipe", "tiny-cpu", "--model", str(model), "--data", str(data), "--topics", "movies", "books"]
    argv += ["--output-dir", str(out), "--max-steps", "4", "--per-device-batch-size", "4", "--eval-split", "none"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    launcher = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        code = launcher.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers
        launcher.wait()
        return "stuck", time.perf_counter() - started
    return ("ok" if code == 0 else f"exit {code}"), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="Two-process launches, one after the other.")
    parser.add_argument("--timeout", type=float, default=90.0, help="Seconds a run may take before it is stuck.")
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="Busy processes competing for CPU.")
    parser.add_argument("--work", type=Path, default=Path(".bench/stress"), help="Folder for inputs and runs.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model, data = _inputs(args.work)
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.busy)]
    for hog in hogs:
        hog.start()
    try:
        results = [_one_run(model, data, args.work / f"run-{i}", args.timeout) for i in range(args.runs)]
    finally:
        for hog in hogs:
            hog.kill()
    for i, (status, seconds) in enumerate(results):
        print(f"run {i:2d}: {status:8s} {seconds:6.1f} s")
    passed = sum(status == "ok" for status, _ in results)
    walls = sorted(seconds for _, seconds in results)
    print(f"{passed}/{len(results)} runs ended cleanly within {args.timeout:.0f} s with {args.busy} busy processes;")
    print(f"wall per run: min {walls[0]:.1f} s, median {walls[len(walls) // 2]:.1f} s, max {walls[-1]:.1f} s")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
