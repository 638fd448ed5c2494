"""Progress bars, the log and quiet mode, the same for every command.

One bar per unit of work a person waits for, named and with a total, one at a time (a bar opened while
another is open draws cursor-movement escape codes). Bars are off when ``--quiet`` is given or when one of
the usual variables asks for it: ``TQDM_DISABLE``, ``HF_DATASETS_DISABLE_PROGRESS_BARS`` or
``HF_HUB_DISABLE_PROGRESS_BARS``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

__all__ = ["QUIET_VARIABLES", "bars_disabled", "configure_logging", "library_bars_off", "progress", "set_quiet"]

# Libraries whose INFO lines narrate their internals (accelerate logs every file of every checkpoint it saves).
_CHATTY = ("accelerate",)

QUIET_VARIABLES = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")
_OFF = ("", "0", "false", "no", "off")


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """The log of a command: our INFO lines (DEBUG with `verbose`), the libraries' warnings; `quiet`: `set_quiet`.

    Where the process has no log handler yet (a command, not a test or an application): one on stderr, which
    leaves out a record that a library's own handler has printed already (datasets keeps one on its logger).
    """
    if not logging.root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_not_printed_yet)
        logging.root.addHandler(handler)
        logging.root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if quiet:
        set_quiet()


def _not_printed_yet(record: logging.LogRecord) -> bool:
    """Whether no logger between `record`'s and the root has a handler of its own that printed it (a
    `logging.NullHandler`, which urllib3 and requests keep, prints nothing)."""
    logger = logging.getLogger(record.name)
    while logger.parent is not None:
        if any(not isinstance(h, logging.NullHandler) and record.levelno >= h.level for h in logger.handlers):
            return False
        logger = logger.parent
    return True


def bars_disabled() -> bool:
    """Whether an environment variable of `QUIET_VARIABLES` turns progress bars off."""
    return any(os.environ.get(name, "").strip().lower() not in _OFF for name in QUIET_VARIABLES)


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None, unit: str, show: bool = True):
    """A `tqdm` bar named `desc` with `total` steps of `unit`, unless bars are off or `show` is False."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not show or bars_disabled(), dynamic_ncols=True)


@contextmanager
def library_bars_off(library: Literal["datasets", "transformers"]) -> Iterator[None]:
    """A library's own progress bars off for the block, then as they were: where ours draws the one bar."""
    if library == "datasets":
        import datasets

        enabled = datasets.is_progress_bar_enabled()
        disable, enable = datasets.disable_progress_bars, datasets.enable_progress_bars
    else:
        from transformers.utils import logging as transformers_logging

        enabled = transformers_logging.is_progress_bar_enabled()
        disable, enable = transformers_logging.disable_progress_bar, transformers_logging.enable_progress_bar
    disable()
    try:
        yield
    finally:
        if enabled:
            enable()


def set_quiet() -> None:
    """``--quiet``: no progress bars (ours, datasets', the Hub's, transformers', also in child processes) and
    only warnings and errors in the log."""
    for name in QUIET_VARIABLES:
        os.environ[name] = "1"  # read by the libraries when they are imported, here and in child processes
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    # The libraries already imported read their switch at import time: turn their bars off directly.
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    logging.getLogger().setLevel(logging.WARNING)
