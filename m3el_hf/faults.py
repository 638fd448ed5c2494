"""What a command that stopped tells its user: one line per kind of fault, the traceback only when asked for.

`cli.main` sends every exception here. Bad input and options (`USER_ERRORS` in `cli`) are reported as they are;
the faults below (Ctrl-C, a full disk, a file it may not read or write, a damaged Parquet shard) get a line naming
the file and what to do. Anything else is a bug: its traceback is shown. ``--debug`` or ``M3EL_HF_DEBUG=1``
shows the traceback of every fault, for a bug report.
"""

from __future__ import annotations

import errno
import os
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = ["DEBUG_VARIABLE", "INTERRUPTED", "debugging", "fault_line", "output_of"]

DEBUG_VARIABLE = "M3EL_HF_DEBUG"
INTERRUPTED = 130
"""The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def debugging(flag: bool = False) -> bool:
    """Whether faults show their traceback: ``--debug`` (`flag`) or ``M3EL_HF_DEBUG`` set to anything but 0."""
    return flag or os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def output_of(config: Any) -> str | None:
    """The file or folder a command's configuration writes (``--out``, ``--output``, ``--output-dir``), if any."""
    for name in ("out", "output", "output_dir"):
        if getattr(config, name, None) is not None:
            return os.fspath(getattr(config, name))
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then the errors it was raised from or while handling (datasets wraps what went wrong)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def _shard(error: BaseException) -> str | None:
    """The Parquet file that the failing code was reading: the innermost frame with a local naming one.

    Neither pyarrow's errors nor datasets' wrapper name the file; the frames that opened it hold its path.
    """
    found = None
    for link in _chain(error):
        for frame, _ in traceback.walk_tb(link.__traceback__):
            for value in frame.f_locals.values():
                if isinstance(value, (str, os.PathLike)) and os.fspath(value).endswith(".parquet"):
                    found = os.fspath(value)
    return found


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")


def fault_line(error: BaseException, left: str, output: str | None) -> str | None:
    """The line for `error` if it is a fault of the machine or the files rather than a bug, else None.

    `left` says what the command leaves behind when it stops part way (``nothing was written``); `output` is
    the file or folder it writes, named when a full disk does not say which file it was writing.
    """
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted; {left}."
    oserror = next((link for link in _chain(error) if isinstance(link, OSError)), None)
    if oserror is not None and oserror.errno in (errno.ENOSPC, errno.EDQUOT):
        where = oserror.filename or output or "the output folder"
        return f"no space left on the device while writing {where}; {left}. Free some space there and run it again."
    if isinstance(oserror, PermissionError):
        where = oserror.filename or output or "a file"
        return f"{where}: permission denied; make it readable (and its folder writable), or choose another path."
    import pyarrow as pa

    # pyarrow reports a damaged file as an ArrowException, or as an OSError with no errno.
    arrow = next((e for e in _chain(error) if isinstance(e, pa.ArrowException) or type(e) is OSError), None)
    if arrow is not None and (arrow.errno is None if isinstance(arrow, OSError) else True) and (shard := _shard(error)):
        return (
            f"{shard} is a damaged Parquet shard ({_first_line(arrow)}); prepare the folder again, or download it "
            "again from the Hub."
        )
    return None
