"""Resolving and reading the release's image paths safely: inside the release root, one open per file."""

from __future__ import annotations

import os
import stat
import unicodedata
from collections import OrderedDict
from pathlib import Path, PurePosixPath

__all__ = ["ImagePathResolver", "resolve_image_path"]


def resolve_image_path(local: str, root: str | Path) -> Path:
    """Resolve a release-local image path (``/M3EL/{topic}_candidates_images/...``) under `root`.

    The leading root component of an absolute path names the release, not a real folder, so it
    is replaced by `root`. Raises `ValueError` for a path that escapes `root` (``..`` or a
    symlink pointing outside) and `FileNotFoundError` when no file exists (its message shows a
    path that is not ASCII escaped as well, with its Unicode normal form). When a name is absent, a
    sibling that differs only in Unicode normalisation (NFC or NFD, as archives made on macOS
    store names) is matched, for folders and files; for files, also one whose extension differs
    in case (``.JPG`` for ``.jpg``).
    """
    return Path(ImagePathResolver(root).resolve(local))


class ImagePathResolver:
    """`resolve_image_path` for many images of one release, returning strings, and `read_bytes`.

    The real path of each image folder is cached (an instance folder holds a few images), so a
    file costs one ``lstat`` to resolve and one ``open`` to read; the caches are bounded, so memory
    does not grow with the release.

    >>> paths = ImagePathResolver("release")  # doctest: +SKIP
    >>> paths.resolve("/M3EL/movies_candidates_images/Q1/Q1.jpg")  # doctest: +SKIP
    '/data/release/movies_candidates_images/Q1/Q1.jpg'
    """

    def __init__(self, root: str | Path, cache_size: int = 4096):
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._dirs: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._folders: dict[str, str] = {}

    def resolve(self, local: str) -> str:
        """The real path of `local`'s file under the root; raises like `resolve_image_path`."""
        return self._resolve(local)[0]

    def read_bytes(self, local: str) -> bytes:
        """The bytes of `local`'s file under the root; raises like `resolve`.

        The common case is one ``open`` that refuses a symlink, in a folder whose real path is cached
        under the folder as the record writes it; a link, a missing file, an extension of another
        case or a name in another Unicode normal form goes through `resolve`.
        """
        folder = local[: local.rfind("/") + 1]  # as written, with its last "/": "/M3EL" and "M3EL" differ
        name = local[len(folder) :]
        real = self._folders.get(folder)
        if real is not None and name not in ("", ".", "..") and "\\" not in local:
            try:
                data = _read_regular_file(os.open(real + name, _OPEN_NO_LINK))
            except OSError:
                data = None
            if data is not None:
                return data
        path, real = self._resolve(local)
        # Only folders inside the root: a file link may lead back in from a folder link that leads out.
        if _OPEN_NO_LINK is not None and "\\" not in local and real.startswith(self._prefix):
            if len(self._folders) >= self._cache_size:
                self._folders.clear()
            self._folders[folder] = real + os.sep
        with open(path, "rb") as f:
            return f.read()

    def _resolve(self, local: str) -> tuple[str, str]:
        """`local`'s real path and the real path of the folder it names."""
        parts = [p for p in local.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"image path {local!r} escapes the release root (contains '..')")
        if local.startswith(("/", "\\")):
            parts = parts[1:]
        if not parts:
            raise FileNotFoundError(f"image path {local!r} names no file")
        folder = self._real_dir(os.path.join(self.root, *parts[:-1]))
        resolved = os.path.join(folder, parts[-1])
        mode = _lstat_mode(resolved)
        if mode is not None and stat.S_ISLNK(mode):
            # Resolve symlinks before the containment check: a link inside the release may point anywhere.
            resolved = os.path.realpath(resolved)
            mode = _stat_mode(resolved)
        if mode is None:
            resolved = _sibling(folder, parts[-1], extension_case=True) or resolved
            mode = _stat_mode(resolved)
        if resolved != self.root and not resolved.startswith(self._prefix):
            raise ValueError(f"image path {local!r} escapes the release root (resolves to {Path(resolved)})")
        if mode is None or not stat.S_ISREG(mode):
            candidate = os.path.join(self.root, *parts)
            raise FileNotFoundError(f"image file not found: {local!r} (looked for {Path(candidate)}){_escaped(local)}")
        return resolved, folder

    def _real_dir(self, folder: str) -> str:
        """The real path of `folder` (a path under the root), one ``lstat`` per folder not cached."""
        if folder == self.root:
            return folder
        real = self._dirs.get(folder)
        if real is not None:
            self._dirs.move_to_end(folder)
            return real
        parent, name = os.path.split(folder)
        real = os.path.join(self._real_dir(parent), name)
        mode = _lstat_mode(real)
        if mode is None and not name.isascii():  # an ASCII name has one normal form only
            real = _sibling(os.path.dirname(real), name, extension_case=False) or real
        elif mode is not None and stat.S_ISLNK(mode):
            real = os.path.realpath(real)
        self._dirs[folder] = real
        if len(self._dirs) > self._cache_size:
            self._dirs.popitem(last=False)
        return real


_OPEN_NO_LINK = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_NOFOLLOW")
    else None
)


def _read_regular_file(fd: int) -> bytes | None:
    """All bytes of the regular file open as `fd`, or None when it is not one; closes `fd`."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        data = os.read(fd, info.st_size)
        while len(data) < info.st_size and (more := os.read(fd, info.st_size - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _stat_mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _sibling(folder: str, name: str, *, extension_case: bool) -> str | None:
    """A sibling of the absent `name` in `folder` whose name equals it in Unicode normal form NFC, and
    with `extension_case` also one whose extension differs in case; its real path, or None."""
    wanted = _loose(name, extension_case)
    try:
        siblings = sorted(os.listdir(folder))
    except OSError:
        return None
    for sibling in siblings:
        if _loose(sibling, extension_case) == wanted:
            return os.path.realpath(os.path.join(folder, sibling))
    return None


def _loose(name: str, extension_case: bool) -> tuple[str, str]:
    """What `_sibling` compares of a name: its NFC stem and extension, the extension lower-cased if asked."""
    path = PurePosixPath(unicodedata.normalize("NFC", name))
    return (path.stem, path.suffix.lower()) if extension_case else (path.name, "")


def _escaped(local: str) -> str:
    """For a message: `local` with what is not ASCII escaped, and its Unicode normal form; empty for ASCII."""
    if local.isascii():
        return ""
    form = next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, local)), "neither NFC nor NFD")
    return f"; written as {local!a} ({form})"
