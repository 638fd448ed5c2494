"""Progress bars as a person at a terminal or a log file sees them: one at a time, named, quiet when asked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m3el_hf.progress import bars_disabled

SCRIPT = Path(sys.executable).with_name("m3el-hf")


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    switches = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")
    environ = {k: v for k, v in os.environ.items() if k not in switches}  # as in a user's shell
    environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **env)
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=environ, capture_output=True, text=True, check=True)


def _bars(stderr: str) -> set[str]:
    """The names of the progress bars drawn (the text before the first colon of each redrawn line)."""
    return {part.split(":")[0].strip() for part in stderr.replace("\r", "\n").splitlines() if "%|" in part}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bars")
    _run("synth", "--out", "raw", "--instances", "60", "--quiet", cwd=root)
    return root / "raw"


@pytest.mark.slow
def test_prepare_draws_one_bar_for_its_two_processes(raw, tmp_path):
    done = _run("prepare", "--raw", str(raw), "--out", "m3el", "--num-proc", "2", cwd=tmp_path)
    assert _bars(done.stderr) == {"Preparing 10 configs"}  # not datasets' per-split bars of each process
    assert "\x1b" not in done.stderr and "Wrote" in done.stdout


@pytest.mark.parametrize(
    "how", [("--quiet",), ("TQDM_DISABLE", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")], ids=lambda h: h[0]
)
@pytest.mark.slow
def test_quiet_and_the_usual_variables_turn_every_bar_off(raw, tmp_path, how):
    args, env = (how, {}) if how[0] == "--quiet" else ((), {how[0]: how[1]})
    done = _run("prepare", "--raw", str(raw), "--out", "m3el", *args, cwd=tmp_path, **env)
    assert _bars(done.stderr) == set() and "Wrote" in done.stdout
    if args:
        assert done.stderr == ""  # --quiet: no log below warnings either


@pytest.mark.slow
def test_evaluate_draws_named_bars_with_totals_one_at_a_time(raw, tiny_clip_path, tmp_path):
    _run("prepare", "--raw", str(raw), "--out", "m3el", "--quiet", cwd=tmp_path)
    shutil.copytree(tiny_clip_path, tmp_path / "tiny")
    done = _run("evaluate", "--model", "tiny", "--data", "m3el", "--output", "r.json", cwd=tmp_path)
    bars = _bars(done.stderr)
    assert "Reading rows, encoding images" in bars and any(bar.startswith("Encoding ") for bar in bars)
    assert "\x1b" not in done.stderr  # no cursor movement: bars are never nested
    lines = [part for part in done.stderr.replace("\r", "\n").splitlines() if "%|" in part]
    assert all(re.search(r"\| \d+/\d+ \[", line) for line in lines), lines  # every bar has a total
    assert "mean accuracy" in done.stdout and "(instances evaluated)" in done.stdout


def test_bars_disabled_reads_the_usual_variables(monkeypatch):
    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    assert not bars_disabled()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not bars_disabled()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert bars_disabled()


LOG_TWICE = """
import logging

import urllib3  # keeps a NullHandler on its logger, and lets records through to the root

from m3el_hf.progress import configure_logging

configure_logging()
import datasets  # keeps a handler of its own on its logger, which prints the record

logging.getLogger("urllib3.connectionpool").warning("from urllib3")
logging.getLogger("datasets.builder").warning("from datasets")
logging.getLogger("m3el_hf.data").warning("from m3el_hf")
"""


def test_the_command_log_prints_each_warning_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run([sys.executable, "-c", LOG_TWICE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines.count("WARNING urllib3.connectionpool: from urllib3") == 1
    assert lines.count("WARNING m3el_hf.data: from m3el_hf") == 1
    assert sum("from datasets" in line for line in lines) == 1, lines
