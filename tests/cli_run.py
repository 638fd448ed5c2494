"""Running ``m3el-hf`` in a fresh interpreter, as a user does: its exit status, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a run offline, with this checkout first on the path."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": path, **extra}


def run_cli(*args: str, cwd: str | os.PathLike[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m m3el_hf ARGS`` with `env` added to the environment; never raises on a failing status."""
    return subprocess.run(
        [sys.executable, "-m", "m3el_hf", *args], cwd=cwd, env=cli_env(**env), capture_output=True, text=True
    )
