"""Staging: the exact folder a push uploads (or a dry run writes), built from a prepared dataset or a checkpoint."""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard

from ..benchmark import EVAL_RESULTS_DIR, eval_results_files, eval_yaml
from ..data.audit import DatasetAudit
from ..data.dataset_card import build_dataset_card, dataset_sizes, license_text
from ..data.prepare import read_report
from ..data.records import SkipReport
from ..layout import CARD_NAME, EVAL_YAML_NAME, LICENSE_NAME, instance_path
from ..provenance import Provenance
from .model_card import MODEL_NAME, PLOT_NAME, build_model_card

__all__ = [
    "DATASET_IGNORE_PATTERNS",
    "MODEL_IGNORE_PATTERNS",
    "list_files",
    "refresh_dataset_card",
    "stage_dataset",
    "stage_model",
    "staging_near",
]

logger = logging.getLogger(__name__)


_COMMON_IGNORE = (".work/*", "*/.work/*", "*.tmp", ".cache/*", ".git/*", "*.partial-*/*", "__pycache__/*")


DATASET_IGNORE_PATTERNS: tuple[str, ...] = _COMMON_IGNORE
"""Never uploaded from a prepared folder: build leftovers."""


MODEL_IGNORE_PATTERNS: tuple[str, ...] = (
    *_COMMON_IGNORE,
    # Training state, not model: resumable checkpoints, optimizer / scheduler / RNG states, tracker logs.
    "checkpoints/*",
    "checkpoint-*/*",
    "optimizer*",
    "*/optimizer*",
    "scheduler*",
    "*/scheduler*",
    "random_states*",
    "rng_state*",
    "*.pt",
    "*.pkl",
    "training_args.bin",
    "runs/*",
    "logs/*",
)
"""Never uploaded from a checkpoint folder."""


def _ignored(relpath: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(relpath, pattern) for pattern in patterns)


def _place(src: Path, dst: Path, link: bool) -> None:
    """Hard-link `src` to `dst` when allowed and possible (no copy of large shards), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another filesystem, or links not supported: copy instead
    shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path, ignore: Sequence[str], link: bool) -> None:
    for path in sorted(src.rglob("*")):
        relpath = path.relative_to(src).as_posix()
        if path.is_file() and not path.is_symlink() and not _ignored(relpath, ignore):
            _place(path, dst / relpath, link)


def _write_text(path: Path, text: str) -> None:
    # Unlink first: the staged file may be a hard link to the user's own file, which must stay untouched.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text, encoding="utf-8")


def list_files(folder: Path) -> dict[str, int]:
    """Every file of `folder` (path relative to it → size in bytes), sorted."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def refresh_dataset_card(folder: str | os.PathLike[str], *, repo_id: str = "m3el") -> DatasetCard:
    """Re-render a prepared folder's dataset card from its ``prepare_report.json``, for `repo_id`; writes nothing.

    The counts and the audit are the ones `prepare` measured; only the repo id in the loading
    snippets changes, so ``refresh_dataset_card(folder)`` reproduces the card `prepare` wrote.
    """
    report = read_report(folder)
    skipped, options = report["skipped"], report["options"]
    skips = SkipReport()
    skips.records_skipped.update(skipped["records_skipped"])
    skips.images_skipped.update(skipped["images_skipped"])
    skips.examples.extend(skipped["examples"])
    audit = DatasetAudit.from_dict(report["audit"])
    topics = tuple(options["topics"])
    synthetic = report["synthetic"] is not None
    sizes = dataset_sizes(folder, topics)
    return build_dataset_card(audit, skips, topics, repo_id=repo_id, synthetic=synthetic, sizes=sizes, options=options)


def stage_dataset(folder: str | os.PathLike[str], staging: Path, *, repo_id: str, link: bool = True) -> None:
    """Fill `staging` with what the dataset repo should hold: the prepared folder, its card for `repo_id`, eval.yaml."""
    folder = Path(folder)
    card = refresh_dataset_card(folder, repo_id=repo_id)
    shards = instance_path("*", "*")
    if not any(folder.glob(shards)):
        raise FileNotFoundError(f"{folder} holds no {shards} shard; run `m3el-hf prepare` again.")
    _copy_tree(folder, staging, (*DATASET_IGNORE_PATTERNS, CARD_NAME, EVAL_YAML_NAME, LICENSE_NAME), link)
    _write_text(staging / CARD_NAME, str(card))
    report = read_report(folder)
    _write_text(staging / LICENSE_NAME, license_text(report["synthetic"] is not None))
    _write_text(staging / EVAL_YAML_NAME, eval_yaml(tuple(report["options"]["topics"])))


def _stage_plot(staging: Path, plot: Path | None, records: Sequence[Mapping[str, Any]]) -> Path | None:
    target = staging / PLOT_NAME
    target.unlink(missing_ok=True)
    if plot is not None:
        if not Path(plot).is_file():
            raise FileNotFoundError(f"Plot {plot} not found; pass the PNG written by m3el-hf evaluate, or omit --plot.")
        shutil.copy2(plot, target)
        return target
    if not any(r["protocol"] == "candidates" for r in records):
        return None
    from ..evaluation.plots import plot_accuracy

    try:
        return plot_accuracy(records, target)
    except ImportError as error:  # matplotlib is an optional dependency
        logger.warning("No accuracy plot in the card (%s); pass --plot or install m3el-hf[plot].", error)
        return None


def stage_model(
    checkpoint_dir: str | os.PathLike[str],
    staging: Path,
    *,
    repo_id: str,
    dataset_id: str | None,
    records: Sequence[Mapping[str, Any]] = (),
    plot: str | os.PathLike[str] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    model_name: str = MODEL_NAME,
    link: bool = True,
    synthetic: bool | None = None,
    provenance: Provenance | None = None,
    unofficial: bool = False,
) -> None:
    """Fill `staging` with what the model repo should hold (see the module docstring); leaderboard entries carry
    `provenance` and are refused for scores that are not `dataset_id`'s unless `unofficial` (`eval_result_entries`)."""
    checkpoint_dir = Path(checkpoint_dir)
    options = {"model": model_name, "provenance": provenance, "unofficial": unofficial}
    generated = eval_results_files(records, dataset_id, **options) if records and dataset_id else {}
    if not (checkpoint_dir / "config.json").is_file():
        if not generated and not any(checkpoint_dir.glob(f"{EVAL_RESULTS_DIR}/*.yaml")):
            raise FileNotFoundError(
                f"{checkpoint_dir} holds neither a checkpoint (config.json) nor {EVAL_RESULTS_DIR}/*.yaml: pass an "
                "exported checkpoint, or a folder written by m3el_hf.benchmark.write_eval_results."
            )
        logger.info(
            "No config.json in %s: pushing the %s entries only, no model card.", checkpoint_dir, EVAL_RESULTS_DIR
        )
        _copy_tree(checkpoint_dir / EVAL_RESULTS_DIR, staging / EVAL_RESULTS_DIR, ("*.tmp",), link)
    else:
        if not records:
            logger.warning(
                "No --results: the model card holds no scores and no leaderboard entries. Evaluate first "
                "(m3el-hf evaluate ... --output results.json), then pass --results results.json --dataset-id ORG/m3el."
            )
        _copy_tree(checkpoint_dir, staging, (*MODEL_IGNORE_PATTERNS, "README.md", PLOT_NAME), link)
        plot_path = _stage_plot(staging, Path(plot) if plot else None, records)
        card = build_model_card(
            checkpoint_dir,
            records,
            repo_id=repo_id,
            dataset_id=dataset_id,
            plot_path=plot_path,
            base_model=base_model,
            license=license,
            model=model_name,
            synthetic=synthetic,
        )
        _write_text(staging / "README.md", str(card))
    for name, text in generated.items():
        _write_text(staging / EVAL_RESULTS_DIR / name, text)


def staging_near(source: Path) -> Path:
    """A private folder on the source's filesystem, so staged shards are hard links, not copies."""
    try:
        return Path(tempfile.mkdtemp(prefix=".m3el-push-", dir=source.resolve().parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="m3el-push-"))
