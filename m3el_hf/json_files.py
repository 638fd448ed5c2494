"""The JSON files m3el-hf writes and reads back, each marked with the version of its format.

``results.json`` (`m3el-hf evaluate`), ``prepare_report.json`` (`m3el-hf prepare`), ``training_summary.json``
(`m3el-hf train`) and ``index.json`` (`m3el-hf index build`) are written by [`write_json`], which adds
``"format_version": FORMAT_VERSION``, and read by [`read_json`], which refuses any other version (or none)
instead of guessing a format from which keys are present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write

__all__ = ["FORMAT_VERSION", "VERSION_KEY", "FormatVersionError", "read_json", "write_json"]

FORMAT_VERSION = 1
VERSION_KEY = "format_version"


class FormatVersionError(ValueError):
    """A JSON file of m3el-hf in a format this version does not read: its ``format_version`` is missing or other.

    The message is one line naming the file, the version found and the version read; being a `ValueError`,
    the ``m3el-hf`` command reports it on stderr and exits with status 2.
    """


def write_json(path: str | os.PathLike[str], payload: dict[str, Any], **dumps_options: Any) -> Path:
    """Write `payload` with its ``format_version`` to `path` atomically, indented; returns `path`.

    `dumps_options` go to `json.dumps` (e.g. ``ensure_ascii=False``, ``allow_nan=False``).
    """
    if VERSION_KEY in payload:
        raise ValueError(f"The payload for {path} already has a {VERSION_KEY!r} key; write_json adds it.")
    text = json.dumps({VERSION_KEY: FORMAT_VERSION, **payload}, indent=2, **dumps_options) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The payload that [`write_json`] wrote to `path`, without its ``format_version``.

    Raises:
        `FormatVersionError`: The file has no ``format_version``, or one other than `FORMAT_VERSION`.
        `ValueError`: The file is not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); write it again with m3el-hf.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not the object m3el-hf writes.")
    version = data.pop(VERSION_KEY, None)
    if type(version) is not int or version != FORMAT_VERSION:
        found = "no format_version" if version is None else f"format_version {version!r}"
        raise FormatVersionError(
            f"{path} has {found}; this m3el-hf reads format_version {FORMAT_VERSION}: write the file again with it."
        )
    return data
