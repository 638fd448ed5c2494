"""Where a command's inputs are: a checkpoint, a prepared folder or a raw release, local or on the Hub.

Each check reads a few file names (and asks the Hub once whether a repo id exists), nothing more, so a command
refuses a wrong path in one line before it loads a model or a data set. The messages are shared: one wording for
one kind of mistake.
"""

from __future__ import annotations

import os
from pathlib import Path

from .layout import REPORT_NAME

__all__ = ["SUMMARY_NAME", "check_checkpoint", "check_prepared", "check_raw_release", "is_hub_id"]

SUMMARY_NAME = "training_summary.json"
"""The run summary that `train` writes into each exported model folder (``final/``, ``best/``)."""

_RAW_MARKERS = ("_candidates_images",)
_HUB_TIMEOUT = 10
"""Seconds to wait for the Hub's answer: the libraries' own loads retry for a minute before they give up."""


def is_hub_id(value: str, owner: bool = True) -> bool:
    """Whether `value` is a Hub repo id by `huggingface_hub`'s own rules: ``OWNER/NAME``, or with ``owner=False``
    also a bare ``NAME`` (``gpt2``). A path (``./x``, ``/x``, ``a/b/c``) is none.

    >>> is_hub_id("openai/clip-vit-base-patch32"), is_hub_id("gpt2"), is_hub_id("gpt2", owner=False)
    (True, False, True)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if owner and value.count("/") != 1:
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _check_elsewhere(value: str | os.PathLike[str], option: str, what: str) -> None:
    """A value that is no local folder must read as a Hub id: a file or a missing path is refused."""
    if Path(value).exists():
        raise FileNotFoundError(f"{option} {value} is a file; pass a folder or a Hub {what} id.")
    if not is_hub_id(os.fspath(value)):
        raise FileNotFoundError(
            f"{option} {value}: no such folder here, and not a Hub {what} id (OWNER/NAME); check the path."
        )
    _check_hub(os.fspath(value), option, what)


def _check_hub(repo_id: str, option: str, what: str) -> None:
    """Refuse, within seconds, a Hub id that does not exist or a Hub that cannot be reached (skipped offline)."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return  # the loaders read the local cache, and say so in one line when it lacks the repo
    try:
        HfApi().repo_info(repo_id, repo_type=what, timeout=_HUB_TIMEOUT)
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{option} {repo_id}: no such folder here, and no such Hub {what} (or it is private: log in with "
            "hf auth login); check the id."
        ) from None
    except httpx2.TransportError as error:
        raise ConnectionError(
            f"{option} {repo_id}: the Hub cannot be reached ({error}); check the network, or set HF_HUB_OFFLINE=1 "
            "to use the copy in the local cache."
        ) from None


def check_checkpoint(value: str | os.PathLike[str], option: str = "--model") -> None:
    """Refuse a local folder that holds no checkpoint, and a value that is neither a folder nor a Hub id."""
    path = Path(value)
    if not path.is_dir():
        _check_elsewhere(value, option, "model")
        return
    if (path / "config.json").is_file():
        return
    inside = [name for name in ("final", "best") if (path / name / "config.json").is_file()]
    hint = f"; did you mean {path / inside[0]}?" if inside else ""
    raise FileNotFoundError(
        f"{option} {value} is not a checkpoint: it has no config.json{hint} Pass a folder written by "
        "m3el-hf train (RUN/final or RUN/best), a CLIP checkpoint folder, or a Hub model id."
    )


def check_prepared(value: str | os.PathLike[str], option: str = "--data") -> None:
    """Refuse a raw release where a prepared folder is expected, and a value that is neither one nor a Hub id."""
    path = Path(value)
    if not path.is_dir():
        _check_elsewhere(value, option, "dataset")
        return
    if (path / REPORT_NAME).exists():
        return
    if _is_raw(path):
        raise ValueError(
            f"{option} {value} is a raw M³EL release, not a prepared folder; prepare it first: "
            f"m3el-hf prepare --raw {value} --out m3el, then pass --data m3el."
        )
    raise FileNotFoundError(f"{option} {value} is not a folder written by m3el-hf prepare (it has no {REPORT_NAME}).")


def check_raw_release(value: str | os.PathLike[str], option: str = "--raw") -> None:
    """Refuse a prepared folder where the raw release is expected (the reverse mistake of `check_prepared`)."""
    path = Path(value)
    if path.is_dir() and (path / REPORT_NAME).exists():
        raise ValueError(
            f"{option} {value} is a folder written by m3el-hf prepare, not the raw release; {option} takes the "
            "release's folder (movies.json …, movies_candidates_images/ …)."
        )


def _is_raw(path: Path) -> bool:
    return any(child.is_dir() and child.name.endswith(_RAW_MARKERS) for child in path.iterdir())
