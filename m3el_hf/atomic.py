"""Atomic writes: every file and folder m3el-hf publishes is either complete or absent, with the umask's modes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "process_umask", "refuse_used_folder", "replace_dir"]


def process_umask() -> int:
    """The process's umask, read without changing it (setting it, even briefly, affects every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # no /proc (macOS): the only portable way to read it
    os.umask(umask)
    return umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call `write` on a temporary sibling of `path`, then rename it into place; return `path`.

    `path` is never half-written, and gets the mode the umask gives new files (`tempfile.mkstemp`'s are
    private to the user).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def refuse_used_folder(out: str | os.PathLike[str], overwrite: bool, alternative: str | None = None) -> bool:
    """Whether `out` is used (a file, or a folder with anything in it); a `FileExistsError` if so without `overwrite`.

    Every command that writes a folder refuses a used one in these words; `alternative` adds another way out
    (``"--resume-from latest to continue it"``).

    >>> refuse_used_folder("no/such/folder", overwrite=False)
    False
    """
    out = Path(out)
    used = out.exists() and (out.is_file() or any(out.iterdir()))
    if used and not overwrite:
        also = f", {alternative}" if alternative else ""
        raise FileExistsError(
            f"{out} already exists and is not empty; pass --overwrite to replace it{also}, or choose another folder."
        )
    return used


def replace_dir(staging: Path, out: Path, overwrite: bool) -> None:
    """Move a finished `staging` folder to `out` (a folder or a file, replaced) in one rename.

    Its folders and files get the modes the umask gives new ones: `tempfile.mkdtemp` (and temporary files
    written inside) are private to the user, which the published folder must not be.
    """
    refuse_used_folder(out, overwrite)
    umask = process_umask()
    for path in [staging, *staging.rglob("*")]:
        if path.is_symlink():
            continue  # a link's target may lie outside the folder
        if path.is_dir() or (path.is_file() and path.stat().st_nlink == 1):  # a hard link is someone else's file
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
