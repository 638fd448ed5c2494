"""How scores were made: the harness, the package versions, the data's revision and whether it is synthetic.

``results.json`` records a `Provenance`, and every ``.eval_results`` entry made from it says the same in its
``notes``. Entries are leaderboard scores of the named benchmark dataset: those from synthetic data, or from a
local folder (which cannot be shown to be that dataset), are refused unless the user says they are unofficial,
and then each entry says so.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .version import __version__

__all__ = ["Provenance", "check_publishable", "content_fingerprint", "make_provenance"]

Harness = Literal["builtin", "mteb"]
_COMMIT = re.compile(r"[0-9a-f]{40}")
_LIBRARIES = ("transformers", "datasets", "torch")
_HARNESS_TEXT = {"builtin": "m3el-hf's built-in evaluator (not MTEB)", "mteb": "MTEB"}


@dataclass(frozen=True)
class Provenance:
    """What made a set of scores.

    Args:
        harness (`"builtin"` or `"mteb"`): m3el-hf's own evaluator, or MTEB running the M³EL tasks.
        versions (`dict[str, str]`): m3el-hf, transformers, datasets and torch (and mteb with that harness).
        dataset (`str`): the evaluated data, a prepared folder or a Hub dataset id.
        dataset_revision (`str`): a Hub commit, or ``sha256:...`` of a local folder's content (`content_fingerprint`).
        local (`bool`): whether `dataset` is a local folder.
        synthetic (`bool`, *optional*): whether the data is a synthetic release; None when unknown.
    """

    harness: Harness
    versions: dict[str, str]
    dataset: str
    dataset_revision: str
    local: bool
    synthetic: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        return cls(**data)

    def note(self) -> str:
        """The provenance as one sentence for an entry's ``notes``."""
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        data = f"local folder {Path(self.dataset).name}" if self.local else f"Hub dataset {self.dataset}"
        kind = {True: "synthetic data", False: "not synthetic", None: "synthetic or not: unknown"}[self.synthetic]
        return f"harness: {_HARNESS_TEXT[self.harness]}; {versions}; data: {data} at {self.dataset_revision} ({kind})"


def make_provenance(harness: Harness, data: str, revision: str | None, synthetic: bool | None) -> Provenance:
    """The provenance of scores on `data` (a prepared folder, or a Hub id at `revision`) made by `harness`."""
    local = Path(data).is_dir()
    return Provenance(
        harness=harness,
        versions=_versions(harness),
        dataset=data,
        dataset_revision=content_fingerprint(data) if local else _hub_commit(data, revision),
        local=local,
        synthetic=synthetic,
    )


def _versions(harness: Harness) -> dict[str, str]:
    names = (*_LIBRARIES, "mteb") if harness == "mteb" else _LIBRARIES
    return {"m3el-hf": __version__, **{name: importlib.metadata.version(name) for name in names}}


def content_fingerprint(folder: str | os.PathLike[str]) -> str:
    """``sha256:`` of a prepared folder's Parquet shards: their paths and bytes, in path order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.parquet")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _hub_commit(data: str, revision: str | None) -> str:
    """The commit of the Hub dataset `data` at `revision` (a branch or tag is resolved: ``main`` moves)."""
    if revision is not None and _COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return HfApi().dataset_info(data, revision=revision).sha
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
        raise ValueError(
            f"Could not resolve the commit of dataset {data} at {revision or 'main'} ({type(error).__name__}); "
            "pass --data-revision with the 40-character commit."
        ) from None


def check_publishable(provenance: Provenance | None, dataset_id: str, unofficial: bool) -> str | None:
    """Why scores are not leaderboard scores of `dataset_id` (synthetic data, a local folder or another dataset),
    or None when they are; a `ValueError` saying so unless `unofficial`."""
    if provenance is None:
        reason = "the results do not record how they were made (write them with m3el-hf evaluate)"
    elif provenance.synthetic:
        reason = "the scores come from synthetic data"
    elif provenance.local or provenance.dataset != dataset_id:
        reason = f"the scores come from {'the local folder ' if provenance.local else ''}{provenance.dataset}"
    else:
        return None
    if not unofficial:
        raise ValueError(
            f"Refusing leaderboard entries for {dataset_id}: {reason}. Evaluate --data {dataset_id}, or pass "
            "--unofficial-data to write them anyway, each entry saying so."
        )
    return reason
