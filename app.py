"""The demo page as a Hugging Face Space (Gradio SDK): ``python app.py`` serves it.

What it serves, from environment variables (the Space's variables) or else from beside this file:

- ``M3EL_MODEL``: checkpoint folder or Hub id; default ``model/``.
- ``M3EL_INDEX``: entity index folder(s), separated by ``os.pathsep`` (``:``); default every folder here
  holding an ``index.json`` (written by ``m3el-hf index build``), e.g. ``index-movies/``.
- ``M3EL_RESULTS``: an ``m3el-hf evaluate`` results file; default ``results.json`` if there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

from m3el_hf.app import build_app

HERE = Path(__file__).resolve().parent


def _settings() -> tuple[str, list[str], str | None]:
    model = os.environ.get("M3EL_MODEL") or str(HERE / "model")
    indexes = os.environ.get("M3EL_INDEX")
    index = indexes.split(os.pathsep) if indexes else [str(p.parent) for p in sorted(HERE.glob("*/index.json"))]
    default_results = HERE / "results.json"
    results = os.environ.get("M3EL_RESULTS") or (str(default_results) if default_results.is_file() else None)
    return model, index, results


if __name__ == "__main__":
    build_app(*_settings()).launch()
