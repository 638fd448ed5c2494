"""``m3el-hf prepare``: run the M³EL builder and write the Hub layout (Parquet shards + dataset card).

The folder it writes (its files: `m3el_hf.layout`) loads with stock ``datasets.load_dataset(folder, config)``,
also streaming, and is what ``push-dataset`` uploads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from datasets.exceptions import DatasetGenerationError

from ..atomic import refuse_used_folder, replace_dir
from ..benchmark import eval_yaml
from ..images import default_max_pixels
from ..json_files import read_json, write_json
from ..layout import CARD_NAME, EVAL_YAML_NAME, LICENSE_NAME, REPORT_NAME, instance_path, kb_path, shard_name
from ..locations import check_raw_release
from ..progress import library_bars_off
from ..progress import progress as progress_bar
from ..tasks import TOPICS, check_topics
from .audit import DatasetAudit
from .dataset_card import dataset_sizes, license_text, render_dataset_card
from .raw_files import M3ELFormatError, find_record_files, parse_records_option
from .records import SkipReport
from .synth import SYNTH_MARKER

__all__ = [
    "PrepareConfig",
    "PrepareResult",
    "is_synthetic",
    "prepare",
    "read_report",
    "run_prepare",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``m3el-hf prepare``.

    >>> PrepareConfig(raw=Path("raw"), out=Path("m3el"), topics=("movies",)).on_error
    'raise'
    """

    raw: Path = field(metadata={"help": "Raw M³EL release: the folder holding movies.json … and *_candidates_images/."})
    out: Path = field(metadata={"help": "Output folder; name it m3el to load it as load_dataset('m3el', ...)."})
    topics: tuple[str, ...] = field(default=TOPICS, metadata={"help": "Topics to prepare."})
    format: Literal["m3el", "mimic"] = field(
        default="m3el",
        metadata={
            "help": "`m3el`: an M³EL release; `mimic`: WikiMEL, RichpediaMEL or WikiDiverse as MIMIC distributes "
            "them (*_train/_dev/_test.json, kb_entity.json, qid2id.json, kb_image/, mention_image/), one topic "
            "named --name whose mentions rank the whole KB (`m3el_hf.data.mimic`)."
        },
    )
    name: str = field(default="wikimel", metadata={"help": "With --format mimic: the dataset's name, its topic."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Recommended for training: resize every image whose shorter side exceeds N so that it is N "
            "(bicubic, as CLIP's processor; upright; JPEG at quality 95, PNG with transparency). Use the "
            "checkpoint's input size, e.g. 224 (default: embed images as they are)."
        },
    )
    max_image_side: int | None = field(
        default=None,
        metadata={
            "help": "Downscale images whose longer side exceeds this (Lanczos). CLIP resizes the shorter side to "
            "its input size, so this can leave it upsampling a blurred picture: prefer --image-size."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Refuse images with more pixels (decompression bombs), counted under --on-error skip "
            "(default and upper bound: PIL.Image.MAX_IMAGE_PIXELS, which stock readers enforce)."
        },
    )
    records: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "TOPIC=FILE: read this file at the release root as the topic's records, e.g. movies=movies_v0.json "
            "(default: {topic}.json, .jsonl or .txt, the only file there whose name starts with the topic)."
        },
    )
    on_error: Literal["raise", "skip"] = field(
        default="raise",
        metadata={"help": "On a bad record or image: stop with an error naming it, or skip it and count it."},
    )
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest Parquet shard, e.g. 500MB."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output folder."})
    num_proc: int = field(
        default=min(2, os.cpu_count() or 1),
        metadata={
            "help": "Topics built at once, in this process and num_proc - 1 worker processes (default: "
            "min(2, CPU count)). Scripts that call prepare() with more than 1 need an "
            "`if __name__ == '__main__':` guard."
        },
    )

    def __post_init__(self):
        if self.format not in ("m3el", "mimic") or not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(
                f"format must be 'm3el' or 'mimic' and name lowercase letters, digits and _, got format="
                f"{self.format!r}, name={self.name!r}."
            )
        if self.format == "mimic":  # one topic, the dataset's --name
            if self.name in (*TOPICS, "all"):
                raise ValueError(
                    f"--name {self.name} would pass for M³EL's own config: name the dataset, e.g. wikimel."
                )
            if tuple(self.topics) not in (TOPICS, (self.name,)) or self.records:
                raise ValueError(
                    f"--topics and --records are for M³EL releases; with --format mimic the one topic is "
                    f"--name ({self.name})."
                )
            object.__setattr__(self, "topics", (self.name,))  # frozen: set once, here
        else:
            parse_records_option(self.records, check_topics(self.topics))
        for name in ("image_size", "max_image_side"):
            if getattr(self, name) is not None and getattr(self, name) < 8:
                raise ValueError(f"{name} must be at least 8 pixels, got {getattr(self, name)}.")
        if self.image_size is not None and self.max_image_side is not None:
            raise ValueError("Pass --image-size or --max-image-side, not both (--image-size is the one for CLIP).")
        limit = default_max_pixels()
        if self.max_pixels is not None and not 1 <= self.max_pixels <= limit:
            raise ValueError(
                f"max_pixels must be between 1 and PIL's limit {limit:,} (PIL.Image.MAX_IMAGE_PIXELS): stock readers "
                f"refuse larger images; got {self.max_pixels:,}."
            )
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}.")
        if self.num_proc < 1:
            raise ValueError(f"num_proc must be at least 1, got {self.num_proc}.")


@dataclass
class PrepareResult:
    """What ``prepare`` wrote: the folder, its counts and what was skipped."""

    out: Path
    audit: DatasetAudit
    report: SkipReport


def _build(config: PrepareConfig, config_name: str, work: Path, **options: Any):
    from m3el_hf.loading_script.m3el import M3EL

    builder = M3EL(
        config_name=config_name,
        data_dir=str(config.raw),
        cache_dir=str(work / "cache"),
        on_error=config.on_error,
        max_image_side=config.max_image_side,
        image_size=config.image_size,
        max_pixels=config.max_pixels,
        records=config.records,
        **options,
    )
    built = work / "build" / config_name
    try:
        builder.download_and_prepare(output_dir=str(built), file_format="parquet", max_shard_size=config.max_shard_size)
    except DatasetGenerationError as error:
        # datasets wraps every generator error; the user needs ours, which names the file and record.
        if isinstance(error.__cause__, M3ELFormatError):
            raise error.__cause__ from None
        raise
    return builder, built


def _move_shards(built: Path, split: str, pattern: str, staging: Path) -> None:
    """Rename ``m3el-{split}[-i-of-n].parquet`` to the Hub names ``{split}-{i:05d}-of-{n:05d}.parquet``."""
    shards = sorted(built.glob(f"*-{split}.parquet")) or sorted(built.glob(f"*-{split}-*-of-*.parquet"))
    if not shards:
        raise RuntimeError(f"The builder wrote no {split!r} shard in {built}.")
    target = staging / Path(pattern).parent
    target.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        shard.rename(target / shard_name(split, i, len(shards)))


def _build_config(config: PrepareConfig, config_name: str, staging: Path) -> tuple[DatasetAudit, SkipReport]:
    """Build one topic's instance (``movies``) or knowledge-base (``movies-kb``) config into `staging`.

    A knowledge base is built from its topic's instance files, already in `staging`: images are not
    read again. Returns what it counted; runs in a worker process when ``num_proc > 1``.
    """
    import datasets

    datasets.disable_progress_bars()  # in a worker process: the parent draws the one bar of the whole prepare
    topic, kb = config_name.removesuffix("-kb"), config_name.endswith("-kb")
    work = staging / ".work" / config_name
    builder, built = _build(config, config_name, work, **({"instances_dir": str(staging)} if kb else {}))
    for split in builder.info.splits:
        _move_shards(built, split, (kb_path if kb else instance_path)(topic, split), staging)
    shutil.rmtree(work)
    return builder.row_builder.audit, builder.skip_report


def _needs(config_name: str) -> str | None:
    """The config that must be built before `config_name`: a knowledge base's topic."""
    return config_name.removesuffix("-kb") if config_name.endswith("-kb") else None


def _drop_empty_shards(staging: Path) -> None:
    """Remove the shard of each split with no rows (a tiny topic): the card's configs leave such splits out.

    The knowledge bases are built by then: they read every split's instance files, empty or not.
    """
    for shard in staging.glob("*/*/*.parquet"):
        if pq.read_metadata(shard).num_rows == 0:
            shard.unlink()


def _build_configs(
    config: PrepareConfig, names: list[str], staging: Path, bar: Any
) -> list[tuple[DatasetAudit, SkipReport]]:
    """`_build_config` for every name, `config.num_proc` at a time; results in the order of `names`.

    This process builds configs too, in a thread, next to ``num_proc - 1`` worker processes: it does not
    idle while the workers start, and this loop hands out the next config the moment any of them
    finishes one. `names` lists the larger configs first, so the small ones fill the end; a knowledge
    base waits for its topic's instances (`_build_config`).
    """
    workers = min(config.num_proc, len(names)) - 1
    if workers == 0:
        return [_done(bar, name, _build_config(config, name, staging)) for name in names]
    # Not "fork": the child would inherit the parent's threads and locks (pyarrow's pools among
    # them). Nothing is preloaded into the fork server: up to Python 3.12.7 and 3.13.0 it imports its
    # preloads with the working directory first on sys.path (CPython gh-117378), so from the root of a
    # clone it would import that m3el_hf source tree instead of the installed package. A worker
    # imports what it needs after it has taken this process's sys.path.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([])
    pending, results = list(names), {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker)
    with ThreadPoolExecutor(1) as here, pool as there:
        running: dict[Future, tuple[str, Executor]] = {}
        try:
            while pending or running:
                # This process first: the first submit to the workers waits while the fork server imports the
                # package, and this process's thread works meanwhile.
                for executor, slots in ((here, 1), (there, workers)):
                    while sum(e is executor for _, e in running.values()) < slots:
                        name = next((n for n in pending if _needs(n) in (None, *results)), None)
                        if name is None:  # only knowledge bases whose topic is still being built
                            break
                        pending.remove(name)
                        with _interrupts_deferred():
                            running[executor.submit(_build_config, config, name, staging)] = (name, executor)
                if not running:
                    raise RuntimeError(f"Nothing runs, yet {pending} wait: a knowledge base lacks its topic.")
                for future in wait(running, return_when=FIRST_COMPLETED).done:
                    name = running.pop(future)[0]
                    results[name] = _done(bar, name, future.result())
        except BaseException:
            _stop(running, there)
            raise
    return [results[name] for name in names]


def _stop(running: dict[Future, Any], there: ProcessPoolExecutor) -> None:
    """End the workers' builds at once, not after their configs: the caller removes the staging folder once this
    process's own build (a thread, which cannot be cut short) has ended too."""
    for future in running:
        future.cancel()
    for process in there._processes.values():
        process.terminate()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C takes effect when the block ends: an executor interrupted while it starts a thread or a process loses
    track of it, and it would build into the staging folder after its removal."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)


def _start_worker() -> None:
    """A worker's start. Ctrl-C signals the whole process group, and the parent alone handles it (it ends them).

    The worker's progress bars (hidden) share a thread lock: tqdm's default lock is a named semaphore, which a
    worker ended mid-build cannot release, and the resource tracker reports it leaked after the interrupt's line.
    """
    import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.tqdm.set_lock(threading.RLock())


def _done(bar: Any, name: str, result: Any) -> Any:
    bar.set_postfix_str(f"{name} done", refresh=False)
    bar.update(1)
    return result


def prepare(config: PrepareConfig) -> PrepareResult:
    """Build every topic and knowledge base, write the card and the report, then move the folder into place."""
    if config.format == "mimic":
        from .mimic import prepare_mimic

        return prepare_mimic(config)
    check_raw_release(config.raw)
    records = {topic: path.name for topic, path in find_record_files(config.raw, config.topics, config.records).items()}
    out = config.out.resolve()
    refuse_used_folder(out, config.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    audit, report = DatasetAudit(), SkipReport()
    # The staging folder is a hidden sibling: an interrupted run leaves nothing that loads as `out`.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        logger.info("Preparing topics %s in %d process(es)", ", ".join(config.topics), config.num_proc)
        # Instance configs first: they are the larger jobs, and the knowledge bases fill in behind them.
        names = [*config.topics, *(f"{topic}-kb" for topic in config.topics)]
        # datasets' per-split bars off (each process would draw its own): prepare draws one.
        with (
            library_bars_off("datasets"),
            progress_bar(desc=f"Preparing {len(names)} configs", total=len(names), unit="config") as bar,
        ):
            results = dict(zip(names, _build_configs(config, names, staging, bar), strict=True))
        # Merged in topic order, so the counts and the report's examples do not depend on num_proc.
        for topic in config.topics:
            (instance_audit, instance_report), (kb_audit, kb_report) = results[topic], results[f"{topic}-kb"]
            audit.merge(instance_audit)
            report.merge(instance_report)
            audit.merge(kb_audit)
            report.merge(kb_report)
        shutil.rmtree(staging / ".work")
        _drop_empty_shards(staging)
        synthetic = _synth_marker(config.raw)
        sizes = dataset_sizes(staging, config.topics)
        card = render_dataset_card(
            audit, report, config.topics, synthetic=synthetic is not None, sizes=sizes, options=asdict(config)
        )
        (staging / CARD_NAME).write_text(card, encoding="utf-8", newline="")
        (staging / LICENSE_NAME).write_text(license_text(synthetic is not None), encoding="utf-8")
        (staging / EVAL_YAML_NAME).write_text(eval_yaml(config.topics), encoding="utf-8")
        _write_report(staging / REPORT_NAME, config, audit, report, synthetic, records)
        replace_dir(staging, out, config.overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if report.total:
        records, images = sum(report.records_skipped.values()), sum(report.images_skipped.values())
        logger.warning("Skipped %d records and %d images; see %s", records, images, out / REPORT_NAME)
    return PrepareResult(out=out, audit=audit, report=report)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it or write it again.") from None


def _synth_marker(raw: Path) -> dict[str, Any] | None:
    path = raw / SYNTH_MARKER
    return _read_json(path) if path.is_file() else None


def is_synthetic(data: str | os.PathLike[str]) -> bool | None:
    """Whether prepared data holds a synthetic release (``m3el-hf synth``), as its ``prepare_report.json`` says.

    Returns None when `data` is not a local prepared folder (a Hub id): then nothing is known.
    """
    if not (Path(data) / REPORT_NAME).is_file():
        return None
    return read_report(data)["synthetic"] is not None


def read_report(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``prepare_report.json`` of a prepared folder: its options, synthetic marker, audit and skips."""
    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a folder written by `m3el-hf prepare`.")
    return read_json(path)


def _write_report(
    path: Path,
    config: PrepareConfig,
    audit: DatasetAudit,
    report: SkipReport,
    synthetic: dict[str, Any] | None,
    records: dict[str, str],
) -> None:
    options = asdict(config)
    options["raw"] = config.raw.name  # no local absolute paths in a file meant for the Hub
    options["out"] = config.out.name
    del options["num_proc"]  # changes the speed, not the output: the folder is the same on every machine
    payload = {
        "options": options,
        "synthetic": synthetic,
        "records_files": records,
        "audit": audit.to_dict(),
        "skipped": report.to_dict(),
    }
    write_json(path, payload, default=str)


def run_prepare(config: PrepareConfig) -> PrepareResult:
    """``m3el-hf prepare``: prepare, then print where the folder is and its size per topic."""
    result = prepare(config)
    for topic, stats in result.audit.topics.items():
        splits = ", ".join(f"{split} {n}" for split, n in stats.splits.items())
        print(
            f"{topic:8s} {stats.instances:7d} instances ({splits}); {stats.kb_entities} KB entities; "
            f"{stats.duplicates} exact duplicate instances kept"
        )
    skipped = f"; skipped: {result.report.to_dict()}" if result.report.total else ""
    print(f"Wrote {result.out}{skipped}")
    print(f"Load it with: datasets.load_dataset({str(result.out)!r}, 'all')")
    return result
