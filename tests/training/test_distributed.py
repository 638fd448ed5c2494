"""Distributed runs end: objects released before the process group goes, a killed rank ends the job, resume exact."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from accelerate import Accelerator
from safetensors.torch import load_file

from m3el_hf.training.config import TrainConfig
from m3el_hf.training.loop import train

REPO = Path(__file__).resolve().parents[2]
TOPICS = ("movies", "books")  # those of the `m3el_data` fixture (conftest.py)
# The README's CPU launch line (accelerate 1.15: `--cpu --num_processes 2` would start one process).
LAUNCH = [
    *("accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
    *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
]


@pytest.mark.slow
def test_prepared_objects_are_released_before_the_process_group_is_destroyed(
    small_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[weakref.ref] = []
    alive_at_end: list[list[str]] = []
    prepare, end_training = Accelerator.prepare, Accelerator.end_training

    def recording_prepare(self, *objects, **kwargs):
        result = prepare(self, *objects, **kwargs)
        prepared.extend(weakref.ref(obj) for obj in (result if isinstance(result, tuple) else (result,)))
        return result

    def checking_end_training(self):
        gc.collect()
        alive_at_end.append([type(ref()).__name__ for ref in prepared if ref() is not None])
        return end_training(self)

    monkeypatch.setattr(Accelerator, "prepare", recording_prepare)
    monkeypatch.setattr(Accelerator, "end_training", checking_end_training)
    train(small_config(tmp_path / "ok", max_steps=2))

    def boom(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr("m3el_hf.training.loop.evaluate_model", boom)
    with pytest.raises(ValueError, match="boom"):  # a run that fails (here: validating) releases them too
        train(small_config(tmp_path / "failed", max_steps=2, eval_split="validation"))
    assert len(prepared) == 8  # model, optimizer, scheduler and loader, per run
    assert alive_at_end == [[], []]


def _launch(
    tiny_clip_path: Path,
    m3el_data: Path,
    output_dir: Path,
    *extra: str,
    popen: bool = False,
    launch: tuple[str, ...] = tuple(LAUNCH),
) -> subprocess.Popen | subprocess.CompletedProcess:
    argv = [*launch, "-m", "m3el_hf.trainers.train", "--recipe", "tiny-cpu", "--model", str(tiny_clip_path)]
    argv += ["--data", str(m3el_data), "--topics", *TOPICS, "--output-dir", str(output_dir), "--eval-split", "none"]
    argv += ["--per-device-batch-size", "4", "--max-steps", "120", "--save-every", "10", "--save-total-limit", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["ACCELERATE_USE_CPU"] = "true"
    command = [str(Path(sys.executable).with_name("accelerate")), *argv[1:], *extra]
    cwd = output_dir.parent  # the README's launch form, from a folder outside the checkout
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_the_readme_launch_form_trains_from_any_folder(tiny_clip_path: Path, m3el_data: Path, tmp_path: Path) -> None:
    """``accelerate launch -m m3el_hf.trainers.train`` on one process, run from a folder outside the checkout."""
    assert not tmp_path.is_relative_to(REPO)
    one = ("accelerate", "launch", "--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    done = _launch(tiny_clip_path, m3el_data, tmp_path / "run", "--max-steps", "2", launch=one)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "final" / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 2 and summary["hardware"]["num_processes"] == 1
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def _rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise LookupError(f"no process of rank {rank} under the launcher")


def _weights(final: Path) -> dict:
    return load_file(final / "model.safetensors")


@pytest.mark.distributed
def test_a_killed_rank_ends_the_job_and_resume_on_two_processes_is_exact(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path
) -> None:
    whole = _launch(tiny_clip_path, m3el_data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-4000:]

    run = tmp_path / "killed"
    launcher = _launch(tiny_clip_path, m3el_data, run, popen=True)
    try:
        while not (run / "checkpoints" / "step-20").is_dir():  # mid-run: after a few checkpoints, before the end
            assert launcher.poll() is None, launcher.communicate()[1][-4000:]
            time.sleep(0.02)
        _rank_process(launcher, 1).send_signal(signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)  # the job ends by itself; the timeout only guards a hang
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0, stderr[-4000:]
    assert any("local_rank: 1" in line and "exitcode: -9" in line for line in stderr.splitlines()), stderr[-4000:]
    assert not (run / "final").exists()
    published = sorted((run / "checkpoints").glob("step-*"))
    assert published, "the checkpoints written before the kill are kept"
    for checkpoint in published:  # each one complete: written under a hidden name, then renamed
        names = {p.name for p in checkpoint.iterdir()}
        assert {"model.safetensors", "random_states_0.pkl", "random_states_1.pkl", "custom_checkpoint_0.pkl"} <= names

    resumed = _launch(tiny_clip_path, m3el_data, run, "--resume-from", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Resumed from" in resumed.stderr
    expected, got = _weights(tmp_path / "whole" / "final"), _weights(run / "final")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] - got[name]).abs().max().item() <= 1e-6, name


@pytest.mark.distributed
def test_across_machines_a_surviving_rank_fails_in_one_line_naming_the_lost_one(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path
) -> None:
    """Two launchers, as on two machines (here both on this one): node 0's launcher does not see node 1's
    worker die, so its rank fails in the next collective, with the one line of train.py, and ends the job."""
    with socket.socket() as probe:  # a port for the rendezvous: --main_process_port 0 is for one machine only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [
        _launch(
            tiny_clip_path,
            m3el_data,
            tmp_path / "run",
            popen=True,
            launch=(
                *("accelerate", "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2"),
                *("--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)),
                *("--mixed_precision", "no", "--dynamo_backend", "no"),
            ),
        )
        for rank in (0, 1)
    ]
    try:
        while not (tmp_path / "run" / "checkpoints" / "step-20").is_dir():
            assert all(node.poll() is None for node in nodes), nodes[0].communicate()[1][-4000:]
            time.sleep(0.02)
        _rank_process(nodes[1], 1).send_signal(signal.SIGKILL)
        _, stderr = nodes[0].communicate(timeout=120)  # the surviving rank fails by itself; the timeout guards a hang
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
            node.communicate()
    assert nodes[0].returncode != 0, stderr[-4000:]
    lines = [line for line in stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1 and "rank 0 of 2 lost rank 1, which stopped or was killed" in lines[0], stderr[-4000:]
    assert "--resume-from latest" in lines[0]


def test_the_lost_process_line(small_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch) -> None:
    from torch.distributed import DistBackendError

    from m3el_hf.trainers.train import lost_a_process, lost_process_message

    config = small_config(tmp_path / "run")
    error = DistBackendError("[pair.cc:534] Connection closed by peer [127.0.0.1]:40155\nException raised from ...")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    line = lost_process_message(error, config)
    assert "\n" not in line and line.startswith("rank 2 of 4 lost another of the 4 ranks")
    assert "Connection closed by peer" in line and str(tmp_path / "run" / "checkpoints") in line
    gloo = RuntimeError("[pair.cc:537] Read error [127.0.0.1]:13715: Connection reset by peer. This is typically")
    assert lost_a_process(error) and lost_a_process(gloo)
    assert not lost_a_process(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not lost_a_process(error)  # one process has no other to lose: a bug, with its traceback
