"""Faults a user meets (Ctrl-C, a full disk, permissions, a damaged shard, a missing extra, an unreachable Hub,
a tiny topic): one line on stderr naming the file and what to do, nothing half-written, no traceback."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from cli_run import cli_env, run_cli

from m3el_hf.cli import main
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.faults import INTERRUPTED


@pytest.fixture(autouse=True)
def _no_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # stderr holds the error line alone


def _one_line(err: str, command: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith(f"m3el-hf {command}: error: "), err
    return err


def test_a_full_disk_names_the_folder_and_leaves_nothing(movies_release, tmp_path, capsys, monkeypatch):
    raw, out = movies_release.parent / "raw", tmp_path / "m3el"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("m3el_hf.data.prepare.replace_dir", full)
    assert main(["prepare", "--raw", str(raw), "--out", str(out), "--topics", "movies"]) == 2
    err = _one_line(capsys.readouterr().err, "prepare")
    assert f"no space left on the device while writing {out}; nothing was written. Free some space" in err
    assert list(tmp_path.iterdir()) == []  # not the folder, nor its hidden staging sibling


def test_a_file_it_may_not_read_is_named(movies_release, tmp_path, capsys, monkeypatch):
    records = movies_release.parent / "raw" / "movies.json"

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(records))

    monkeypatch.setattr("m3el_hf.data.prepare.find_record_files", refused)
    argv = ["prepare", "--raw", str(records.parent), "--out", str(tmp_path / "p"), "--topics", "movies"]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err, "prepare")
    assert f"error: {records}: permission denied; make it readable (and its folder writable)" in err
    assert err.endswith("or choose another path.")
    monkeypatch.setenv("M3EL_HF_DEBUG", "1")  # for a bug report: the traceback
    with pytest.raises(PermissionError):
        main(argv)


def test_index_build_without_faiss_stops_before_any_work(movies_release, tiny_clip_path, tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else find_spec(name, *a))
    monkeypatch.setattr("m3el_hf.linking.command.run_index", lambda config: pytest.fail("the work started"))
    argv = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--out", str(tmp_path / "i")]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err, "index")
    assert err.endswith('index build needs FAISS: pip install "m3el-hf[index]" (faiss-cpu).')


def test_a_split_with_no_rows_has_no_file(tmp_path):
    raw = synthesize(SynthConfig(out=tmp_path / "raw", instances=3, seed=0, topics=("movies",)))
    result = prepare(PrepareConfig(raw=raw, out=tmp_path / "m3el", topics=("movies",)))
    out = result.out
    assert dict(result.audit.topic("movies").splits) == {"train": 3}  # no validation or test instance
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "data/movies/train-00000-of-00001.parquet",
        "kb/movies/kb-00000-of-00001.parquet",
    ]
    assert "split: test" not in out.joinpath("README.md").read_text()


@pytest.mark.slow
def test_a_damaged_shard_is_named(movies_release, tmp_path):
    data = tmp_path / "damaged"
    shutil.copytree(movies_release, data)
    shard = data / "data" / "movies" / "train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:3000])  # a download cut short
    done = run_cli("-q", "show", str(data), "--config", "movies-I-T")
    assert done.returncode == 2
    err = _one_line(done.stderr.strip().splitlines()[-1], "show")
    assert f"{shard} is a damaged Parquet shard (Parquet magic bytes not found in footer" in err
    assert "Traceback" not in done.stderr
    assert done.stderr.count("Failed to read schema") == 1, done.stderr  # datasets' own line, printed once


@pytest.mark.slow
def test_an_unreachable_hub_fails_at_once_in_one_line(movies_release, tmp_path):
    # Nothing listens on port 9: the Hub cannot be reached, as offline without HF_HUB_OFFLINE.
    done = run_cli(
        "evaluate", "--model", "someone/missing", "--data", str(movies_release), "--output", str(tmp_path / "r.json"),
        HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 2
    err = _one_line(done.stderr, "evaluate")
    assert "--model someone/missing: the Hub cannot be reached" in err and "HF_HUB_OFFLINE=1" in err
    assert not (tmp_path / "r.json").exists()


def _interrupt(
    args: list[str], cwd: Path, busy, children: list | None = None, group: bool = True
) -> subprocess.CompletedProcess:
    """Start ``m3el-hf ARGS`` in a process group of its own, send Ctrl-C's signal to the whole group (as a terminal
    does; to the command alone unless `group`) once `busy(stderr so far)` says it is mid-work, and wait for its end;
    `children` receives its processes then."""
    process = subprocess.Popen(
        [sys.executable, "-m", "m3el_hf", *args],
        cwd=cwd,
        env=cli_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A runner started in the background by a non-interactive shell ignores SIGINT, and a child inherits that:
        # give the command the default disposition, as a terminal's foreground job has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in process.stderr], daemon=True)
    reader.start()
    while not busy("".join(lines)) and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "it finished before it could be interrupted:\n" + "".join(lines)[-3000:]
    if children is not None:
        children.extend(psutil.Process(process.pid).children(recursive=True))
    (os.killpg if group else os.kill)(process.pid, signal.SIGINT)
    process.wait(timeout=300)  # a guard against a hang only
    reader.join(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, "", "".join(lines))


def _interrupted(returncode: int) -> bool:
    """Whether a command ended as Ctrl-C should end it: status 130, or killed by SIGINT, which a shell reports as 130.

    About one run in ten here, when Ctrl-C arrives while the command imports its libraries, CPython ends the
    process by SIGINT after its shutdown (its exit_sigint: ``kill(getpid(), SIGINT)`` once the handler is reset)
    although the command caught the KeyboardInterrupt, printed its line and returned 130.
    """
    return returncode in (INTERRUPTED, -signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["group-mid-build", "command-at-start"])
def test_ctrl_c_during_prepare_with_worker_processes_ends_them_all(tmp_path, when):
    """Ctrl-C while the workers build (to the process group, as a terminal sends it), or to prepare alone the moment
    its staging folder exists (while it starts its thread and workers): exit 130, no staging folder, no process."""
    synthesize(SynthConfig(out=tmp_path / "raw", instances=2000, seed=0))
    argv = ["prepare", "--raw", "raw", "--out", "m3el", "--num-proc", "2"]
    children: list[psutil.Process] = []
    if when == "group-mid-build":  # this process and the worker each building a config in the staging folder
        done = _interrupt(argv, tmp_path, lambda err: len(list(tmp_path.glob(".m3el.*/.work/*"))) >= 2, children)
    else:
        done = _interrupt(argv, tmp_path, lambda err: any(tmp_path.glob(".m3el.*")), children, group=False)
    assert _interrupted(done.returncode), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "m3el-hf prepare: error: interrupted; nothing was written."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    assert len(children) >= (2 if when == "group-mid-build" else 0)  # the fork server and a worker
    started_there = [p for p in psutil.process_iter(["cwd"]) if p.info["cwd"] == str(tmp_path)]  # any started later
    _, alive = psutil.wait_procs(children + started_there, timeout=60)  # a guard against a hang only
    assert alive == []


WORKER_BUILD = """
import multiprocessing
import sys
from multiprocessing import resource_tracker
from pathlib import Path
from m3el_hf.data.prepare import PrepareConfig, _build_config, _start_worker

multiprocessing.set_start_method("forkserver")  # as in a worker: its semaphores are named, not unlinked at once
registered = []
resource_tracker.register = lambda name, kind: registered.append(kind)
_start_worker()
_build_config(PrepareConfig(raw=Path(sys.argv[1]), out=Path("unused")), "movies", Path(sys.argv[2]))
print(registered)
"""


@pytest.mark.slow
def test_a_worker_builds_without_a_named_semaphore(movies_release, tmp_path):
    """A worker ended mid-build releases nothing: a semaphore it made would be reported leaked after the line."""
    staging = tmp_path / "staging"
    staging.mkdir()
    raw = str(movies_release.parent / "raw")
    done = subprocess.run([sys.executable, "-c", WORKER_BUILD, raw, str(staging)], env=cli_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.decode().strip() == "[]"
    assert list(staging.glob("data/movies/*.parquet")), "the worker built nothing"


@pytest.mark.slow
def test_ctrl_c_during_prepare_leaves_nothing(tmp_path):
    synthesize(SynthConfig(out=tmp_path / "raw", instances=2000, seed=0))
    argv = ["prepare", "--raw", "raw", "--out", "m3el", "--num-proc", "1"]
    done = _interrupt(argv, tmp_path, lambda err: any(tmp_path.glob(".m3el.*")))
    assert _interrupted(done.returncode), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "m3el-hf prepare: error: interrupted; nothing was written."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.slow
def test_ctrl_c_during_train_keeps_a_checkpoint_and_says_how_to_resume(movies_release, tiny_clip_path, tmp_path):
    """Ctrl-C once a checkpoint exists: 130, one line naming the run and --resume-from latest, which then continues
    from that checkpoint to the end."""
    out = tmp_path / "run"
    argv = [
        "train", "--recipe", "tiny-cpu", "--model", str(tiny_clip_path), "--data", str(movies_release),
        "--output-dir", str(out), "--topics", "movies", "--eval-split", "none", "--save-every", "2",
        "--max-steps", "100000",
    ]  # fmt: skip
    done = _interrupt(argv, tmp_path, lambda err: any((out / "checkpoints").glob("step-*")))
    assert _interrupted(done.returncode), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"m3el-hf train: error: interrupted; {out} keeps its last complete checkpoint: run the same command with "
        "--resume-from latest to continue from it."
    )
    kept = sorted(int(p.name[5:]) for p in (out / "checkpoints").glob("step-*"))
    assert kept and not (out / "final").exists()
    resumed = run_cli(*argv[:-1], str(kept[-1] + 2), "--resume-from", "latest", cwd=tmp_path, TQDM_DISABLE="1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {out / 'checkpoints' / f'step-{kept[-1]}'} at update {kept[-1]}" in resumed.stderr
    assert json.loads((out / "final" / "training_summary.json").read_text())["steps"] == kept[-1] + 2


@pytest.mark.slow
def test_ctrl_c_during_evaluate_writes_nothing(movies_release, tiny_clip_path, tmp_path):
    """Ctrl-C while the first of two models is scored: 130, one line, no results file nor a temporary one."""
    result = tmp_path / "out" / "results.json"
    argv = [
        "evaluate", "--model", str(tiny_clip_path), str(tiny_clip_path), "--data", str(movies_release),
        "--model-name", "first", "second", "--split", "train", "--output", str(result),
    ]  # fmt: skip
    done = _interrupt(argv, tmp_path, lambda err: "Evaluating first" in err)
    assert _interrupted(done.returncode), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "m3el-hf evaluate: error: interrupted; nothing was written."
    assert not result.parent.exists() or list(result.parent.iterdir()) == []
