"""``m3el-hf push-dataset`` / ``push-model``: stage the exact folder a Hub repo should hold, then upload it.

Staging is pure file work (the folder is built next to the source, hard-linking large files where
possible); ``--dry-run DIR`` writes that folder to ``DIR`` and never touches the network, the upload
hands it to `HfApi.upload_folder`, which streams files from disk (LFS / Xet for large ones).

What is uploaded:

- dataset: the prepared folder (Parquet shards, ``prepare_report.json``), ``README.md`` re-rendered
  for the target repo id, and ``eval.yaml``, which registers the repo as the M³EL benchmark;
- model: the checkpoint files (never optimizer, scheduler or RNG states), ``README.md`` (the model
  card), ``accuracy.png`` and ``.eval_results/*.yaml`` (leaderboard entries);
- results only: a folder without ``config.json`` holding ``.eval_results/`` (see
  `m3el_hf.benchmark.write_eval_results`) uploads just those files, e.g. as a pull request
  (``--create-pr``) to the repo of a model you evaluated but do not own; its model card is left alone.

The token comes from ``token``, else ``HF_TOKEN``, else the stored login; it is never printed,
logged or written.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic import replace_dir
from ..json_files import read_json
from ..locations import is_hub_id
from ..provenance import Provenance
from ..version import __version__
from .model_card import MODEL_NAME, base_model_of, read_summary
from .staging import (
    DATASET_IGNORE_PATTERNS,
    MODEL_IGNORE_PATTERNS,
    list_files,
    stage_dataset,
    stage_model,
    staging_near,
)

__all__ = [
    "PushDatasetConfig",
    "PushModelConfig",
    "PushResult",
    "push_dataset",
    "push_model",
    "run_push_dataset",
    "run_push_model",
]

logger = logging.getLogger(__name__)


def _check_repo_id(value: str | None, option: str) -> None:
    if value is not None and not is_hub_id(value):
        raise ValueError(f"{option} must be a Hub repo id 'OWNER/NAME', got {value!r}.")


def _check_push_args(repo_id: str, revision: str | None, create_pr: bool) -> None:
    _check_repo_id(repo_id, "repo (repo_id)")
    if create_pr and revision not in (None, "main"):
        raise ValueError(
            f"create_pr opens a pull request against main; it cannot target revision {revision!r}. Drop one of the two."
        )


@dataclass(frozen=True)
class _PushOptions:
    """Options shared by both push commands."""

    path: Path = field(metadata={"help": "Folder to push.", "positional": True})
    repo: str = field(metadata={"help": "Target Hub repo, OWNER/NAME."})
    private: bool = field(
        default=False,
        metadata={
            "help": "Create the repo private (default: the owner's default visibility; an existing repo is unchanged)."
        },
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch to commit to, created from main when missing (default: main)."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit (or pull request) title."})
    create_pr: bool = field(
        default=False,
        metadata={
            "help": "Open a pull request against main instead of committing, e.g. to a repo you do not own; "
            "the repo must exist. Not combinable with --revision."
        },
    )
    dry_run: Path | None = field(
        default=None,
        metadata={
            "help": "Write the exact folder that would be uploaded to this new directory and upload nothing "
            "(no token needed; push-model reads the base model's licence from the Hub unless --license is given)."
        },
    )

    def __post_init__(self):
        _check_push_args(self.repo, self.revision, self.create_pr)

    def push_options(self) -> dict[str, Any]:
        """The keyword arguments that `push_dataset` and `push_model` share."""
        return {
            "private": self.private,
            "revision": self.revision,
            "commit_message": self.commit_message,
            "create_pr": self.create_pr,
            "dry_run_dir": self.dry_run,
        }


@dataclass(frozen=True)
class PushDatasetConfig(_PushOptions):
    """Options of ``m3el-hf push-dataset``.

    >>> PushDatasetConfig(path=Path("m3el"), repo="me/m3el", dry_run=Path("staged")).create_pr
    False
    """

    path: Path = field(metadata={"help": "Prepared M³EL folder (written by m3el-hf prepare).", "positional": True})
    repo: str = field(metadata={"help": "Target Hub dataset repo, OWNER/NAME; becomes the M³EL benchmark."})


@dataclass(frozen=True)
class PushModelConfig(_PushOptions):
    """Options of ``m3el-hf push-model``.

    >>> PushModelConfig(path=Path("clipnd"), repo="me/clipnd", dataset_id="me/m3el").model_name
    'CLIP_ND'
    """

    path: Path = field(
        metadata={
            "help": "Exported checkpoint folder; or a folder with only .eval_results/ (no config.json), whose "
            "entries alone are pushed.",
            "positional": True,
        }
    )
    repo: str = field(metadata={"help": "Target Hub model repo, OWNER/NAME."})
    results: Path | None = field(
        default=None, metadata={"help": "results.json of m3el-hf evaluate: the card's tables and leaderboard entries."}
    )
    plot: Path | None = field(
        default=None, metadata={"help": "Accuracy plot (PNG) for the card; default: drawn from --results."}
    )
    dataset_id: str | None = field(
        default=None, metadata={"help": "Hub id of the M³EL benchmark dataset the results refer to, OWNER/NAME."}
    )
    model_name: str = field(
        default=MODEL_NAME,
        metadata={"help": "The model of --results that this folder holds; the other models are baselines."},
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id training started from (default: the one training_summary.json records; none when "
            "training started from a local folder)."
        },
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "Licence of the weights, a Hub licence id such as mit or apache-2.0 (default: the base "
            "model's, read from its Hub card). Required when the base model is not on the Hub."
        },
    )
    unofficial_data: bool = field(
        default=False, metadata={"help": "Make entries also from synthetic or other data (see m3el-hf evaluate)."}
    )

    def __post_init__(self):
        super().__post_init__()
        _check_repo_id(self.dataset_id, "--dataset-id")
        _check_repo_id(self.base_model, "--base-model")
        if self.results is not None and self.dataset_id is None:
            raise ValueError("--results needs --dataset-id: the benchmark dataset repo the scores refer to.")


@dataclass
class PushResult:
    """What a push did: the files (path in repo → bytes), and where they went."""

    repo_id: str
    repo_type: Literal["dataset", "model"]
    files: dict[str, int]
    dry_run_dir: Path | None = None
    commit_url: str | None = None
    pr_url: str | None = None


# ---------------------------------------------------------------------------------------------
# Pushing: the dry run writes the staged folder, the upload sends it
# ---------------------------------------------------------------------------------------------


def _dry_run(stage, source: Path, target: Path) -> dict[str, int]:
    target, source = target.resolve(), source.resolve()
    if target == source or source in target.parents:
        raise ValueError(f"--dry-run {target} is inside the folder being pushed ({source}); choose another folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        stage(staging, False)  # copies, not links: the dry-run folder is the user's to inspect and edit
        files = list_files(staging)
        replace_dir(staging, target, overwrite=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def _upload(staging: Path, repo_id: str, repo_type: str, ignore: Sequence[str], **options: Any) -> Any:
    from huggingface_hub import HfApi

    api = HfApi(token=options["token"])
    revision, create_pr = options["revision"], options["create_pr"]
    if create_pr:
        # A pull request goes to an existing repo, typically one the user does not own: never create it.
        if options["private"]:
            logger.warning("private=True is ignored with create_pr: the pull request goes to an existing repo.")
    else:
        # private=None, not False, unless asked: a new repo then gets the owner's default visibility (some
        # organisations default to private), instead of being forced public.
        api.create_repo(repo_id, repo_type=repo_type, private=options["private"] or None, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    return api.upload_folder(
        folder_path=staging,
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        commit_message=options["commit_message"],
        create_pr=create_pr,
        ignore_patterns=list(ignore),  # a fresh list: upload_folder extends it in place
    )


def _push(stage, source: Path, repo_id: str, repo_type: Literal["dataset", "model"], ignore, **options) -> PushResult:
    dry_run_dir = options.pop("dry_run_dir")
    if dry_run_dir is not None:
        files = _dry_run(stage, source, Path(dry_run_dir))
        logger.info("Dry run: staged %d files for %s in %s; nothing uploaded.", len(files), repo_id, dry_run_dir)
        return PushResult(repo_id, repo_type, files, dry_run_dir=Path(dry_run_dir).resolve())
    staging = staging_near(source)
    try:
        stage(staging, True)
        files = list_files(staging)
        info = _upload(staging, repo_id, repo_type, ignore, **options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PushResult(repo_id, repo_type, files, commit_url=info.commit_url, pr_url=info.pr_url)


def push_dataset(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    dry_run_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> PushResult:
    """Push a prepared M³EL folder to the dataset repo `repo_id`, with its card and ``eval.yaml``.

    With `dry_run_dir`, write the staged folder there instead and make no request at all. Otherwise
    create the repo (unless `create_pr`), the `revision` branch when missing, and upload. The other
    options are those of [`PushDatasetConfig`]; `token` defaults to ``HF_TOKEN`` or the stored login.
    """

    _check_push_args(repo_id, revision, create_pr)
    folder = Path(folder)
    return _push(
        lambda staging, link: stage_dataset(folder, staging, repo_id=repo_id, link=link),
        folder,
        repo_id,
        "dataset",
        DATASET_IGNORE_PATTERNS,
        private=private,
        revision=revision,
        commit_message=commit_message or f"Upload M³EL (prepared with m3el-hf {__version__})",
        create_pr=create_pr,
        dry_run_dir=dry_run_dir,
        token=token,
    )


def _load_results(
    results: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None,
) -> tuple[list, bool | None, Provenance | None]:
    """The records, whether they come from synthetic data (None: unknown) and how they were made (None: unknown)."""
    if results is None:
        return [], None, None
    if not isinstance(results, str | os.PathLike):
        return list(results), None, None
    from ..evaluation.results import read_results

    if not Path(results).is_file():
        raise FileNotFoundError(f"Results file {results} not found; write it with `m3el-hf evaluate`.")
    payload = read_json(results)
    provenance = Provenance.from_dict(payload["provenance"]) if payload.get("provenance") else None
    return read_results(results), payload.get("synthetic"), provenance


def _base_model_license(base_model: str | None, token: str | None) -> str:
    """The ``license`` of the base model's Hub card; a `ValueError` saying to pass --license when there is none."""
    if base_model is None:
        raise ValueError(
            "The checkpoint was trained from a local folder, so its licence cannot be read from a base model's "
            "Hub card: pass --license (a Hub licence id, e.g. apache-2.0 or mit)."
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        card_data = model_info(base_model, token=token).card_data
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
        raise ValueError(
            f"Could not read the licence of base model {base_model} from the Hub ({type(error).__name__}); pass "
            "--license (a Hub licence id, e.g. mit)."
        ) from None
    license = card_data.get("license") if card_data is not None else None
    if not isinstance(license, str) or not license:
        raise ValueError(f"Base model {base_model} declares no licence on the Hub; pass --license.")
    return license


def push_model(
    checkpoint_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    results: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    plot: str | os.PathLike[str] | None = None,
    dataset_id: str | None = None,
    model_name: str = MODEL_NAME,
    base_model: str | None = None,
    license: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    dry_run_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    unofficial_data: bool = False,
) -> PushResult:
    """Push a checkpoint with its model card, plot and ``.eval_results`` to the model repo `repo_id`.

    A folder without ``config.json`` pushes only its ``.eval_results/`` entries (plus those made from
    `results`), e.g. ``create_pr=True`` on someone else's model. `results` is a results file of
    ``m3el-hf evaluate`` or its records (then their provenance is unknown: entries need `unofficial_data`); the other
    options are those of [`PushModelConfig`]. A checkpoint
    needs a `license`: given, or read from the Hub card of its base model (the one request a dry run makes).
    """
    _check_push_args(repo_id, revision, create_pr)
    _check_repo_id(dataset_id, "dataset_id")
    checkpoint_dir = Path(checkpoint_dir)
    records, synthetic, provenance = _load_results(results)
    models = sorted({record["model"] for record in records})
    if records and model_name not in models:
        raise ValueError(
            f"The results hold no record of model {model_name!r}, only of {models}: pass --model-name with the "
            "label this checkpoint had in m3el-hf evaluate."
        )
    full = (checkpoint_dir / "config.json").is_file()
    if full:
        base_model = base_model_of(read_summary(checkpoint_dir), base_model)
        license = license or _base_model_license(base_model, token)

    def stage(staging: Path, link: bool) -> None:
        stage_model(
            checkpoint_dir,
            staging,
            repo_id=repo_id,
            dataset_id=dataset_id,
            records=records,
            plot=plot,
            base_model=base_model,
            license=license,
            model_name=model_name,
            link=link,
            synthetic=synthetic,
            provenance=provenance,
            unofficial=unofficial_data,
        )

    default_message = "Upload CLIP_ND checkpoint and model card" if full else "Add M³EL evaluation results"
    return _push(
        stage,
        checkpoint_dir,
        repo_id,
        "model",
        MODEL_IGNORE_PATTERNS,
        private=private,
        revision=revision,
        commit_message=commit_message or default_message,
        create_pr=create_pr,
        dry_run_dir=dry_run_dir,
        token=token,
    )


def _print_files(result: PushResult) -> None:
    for path, size in result.files.items():
        print(f"{size:>14,d}  {path}")
    print(f"{sum(result.files.values()):>14,d}  total, {len(result.files)} files")


def _report(result: PushResult) -> None:
    _print_files(result)
    kind = "datasets/" if result.repo_type == "dataset" else ""
    if result.dry_run_dir is not None:
        print(f"Dry run: wrote {result.dry_run_dir}; nothing was uploaded to {kind}{result.repo_id}.")
    elif result.pr_url:
        print(f"Opened a pull request on {kind}{result.repo_id}: {result.pr_url}")
    else:
        print(f"Pushed to {kind}{result.repo_id}: {result.commit_url}")


def run_push_dataset(config: PushDatasetConfig) -> PushResult:
    """``m3el-hf push-dataset``: push (or dry-run) and print the files and where they went."""
    result = push_dataset(config.path, config.repo, **config.push_options())
    _report(result)
    return result


def run_push_model(config: PushModelConfig) -> PushResult:
    """``m3el-hf push-model``: push (or dry-run) and print the files and where they went."""
    result = push_model(
        config.path,
        config.repo,
        results=config.results,
        plot=config.plot,
        dataset_id=config.dataset_id,
        model_name=config.model_name,
        base_model=config.base_model,
        license=config.license,
        unofficial_data=config.unofficial_data,
        **config.push_options(),
    )
    _report(result)
    return result
