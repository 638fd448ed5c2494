"""The M³EL `datasets` builder: raw release in, topic / task / knowledge-base configs out.

`datasets` >= 4 no longer runs loading scripts from the Hub, so this builder is what
``m3el-hf prepare`` executes to write the Hub layout (Parquet shards plus a README whose YAML
declares the same configs). It is importable as ``m3el_hf.loading_script.m3el`` and can also be
used directly:

>>> builder = M3EL(config_name="movies-I-T", data_dir="path/to/raw")  # doctest: +SKIP
>>> builder.download_and_prepare(); ds = builder.as_dataset()  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.builder import Key
from datasets.utils import tqdm as hf_tqdm

from m3el_hf.data.dataset_card import CITATION
from m3el_hf.data.features import INSTANCE_FEATURES, KB_FEATURES, KB_SPLIT, SPLITS, task_columns
from m3el_hf.data.instances import KB_SOURCE_COLUMNS, ImageReader, RowBuilder, split_of
from m3el_hf.data.raw_files import find_record_files
from m3el_hf.data.records import OnError, SkipReport, iter_records
from m3el_hf.layout import instance_path
from m3el_hf.tasks import TASK_NAMES, TOPICS, check_topics, get_task

__all__ = ["M3EL", "M3ELConfig", "config_names"]

BATCH_BYTES = 64 << 20
"""Most bytes of rows that wait to be written (`_row_bytes`), all splits together; a larger row is a batch of its
own. Memory holds a few batches whatever a topic's size, and Parquet row groups are no larger."""
_ROW_TEXT_BYTES = 4096  # what a row counts besides its images: its text, generously


@dataclass
class M3ELConfig(datasets.BuilderConfig):
    """A view of M³EL: some topics, optionally one task's columns, or the topics' knowledge base.

    Args:
        topics (`tuple[str, ...]`): topics to read, among movies, common, person, books and sports.
        task (`str`, *optional*): keep only this task's columns (e.g. ``"I-T"``); instances are the same.
        kb (`bool`, defaults to `False`): yield the unique entities of the topics instead of mentions.
        on_error (`"raise"` or `"skip"`): on a bad record or image, fail naming it, or skip and count it.
        image_size (`int`, *optional*): resize images whose shorter side exceeds this to it (bicubic, upright).
        max_image_side (`int`, *optional*): downscale images whose longer side exceeds this.
        max_pixels (`int`, *optional*): refuse images with more pixels (default: PIL's decompression-bomb limit).
        records (`tuple[str, ...]`, *optional*): ``"topic=file"`` names a topic's records file at the release
            root, instead of ``{topic}.json|.jsonl|.txt``.
        instances_dir (`str`, *optional*): with `kb`, build the knowledge base from the instance Parquet
            files prepared there (``data/{topic}/{split}-*.parquet``, as ``m3el-hf prepare`` writes them)
            instead of reading the raw release again. From the raw release, a knowledge base reads every
            candidate image of every instance, as the instance configs do.
    """

    topics: tuple[str, ...] = TOPICS
    task: str | None = None
    kb: bool = False
    on_error: OnError = "raise"
    image_size: int | None = None
    max_image_side: int | None = None
    max_pixels: int | None = None
    records: tuple[str, ...] = ()
    instances_dir: str | None = None

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self) -> None:
        """Raise a `ValueError` naming an invalid option (also run at build time: datasets sets overrides
        given to the builder as attributes, after `__post_init__`)."""
        check_topics(self.topics)
        if self.task is not None:
            get_task(self.task)
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}.")
        if self.image_size is not None and self.max_image_side is not None:
            raise ValueError("Pass image_size or max_image_side, not both.")
        if self.instances_dir is not None and not self.kb:
            raise ValueError("instances_dir is for the knowledge-base configs ({topic}-kb) only.")


def _configs() -> list[M3ELConfig]:
    groups = [(topic, (topic,)) for topic in TOPICS] + [("all", TOPICS)]
    configs = [M3ELConfig(name=name, topics=topics, description=f"M³EL, {name}") for name, topics in groups]
    configs += [
        M3ELConfig(name=f"{name}-{task}", topics=topics, task=task, description=f"M³EL, {name}, task {task}")
        for name, topics in groups
        for task in TASK_NAMES
    ]
    configs += [
        M3ELConfig(name=f"{name}-kb", topics=topics, kb=True, description=f"M³EL knowledge base, {name}")
        for name, topics in groups
    ]
    return configs


def config_names() -> list[str]:
    """All config names: topics, ``all``, ``{topic}-{task}`` and ``{topic}-kb``."""
    return [config.name for config in M3EL.BUILDER_CONFIGS]


class M3EL(datasets.ArrowBasedBuilder):
    """Builds M³EL from a raw release directory passed as ``data_dir``."""

    BUILDER_CONFIG_CLASS = M3ELConfig
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> datasets.DatasetInfo:
        if self.config.kb:
            features = KB_FEATURES
        elif self.config.task:
            features = datasets.Features({name: INSTANCE_FEATURES[name] for name in task_columns(self.config.task)})
        else:
            features = INSTANCE_FEATURES
        return datasets.DatasetInfo(
            description="M³EL: multi-task, multi-topic multi-modal entity linking (arXiv 2410.18096).",
            features=features,
            homepage="https://arxiv.org/abs/2410.18096",
            citation=CITATION,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        self.config.check()
        splits = [KB_SPLIT] if self.config.kb else list(SPLITS)
        generators = [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in splits]
        # The knowledge base reads these instance columns; an instance config, its own.
        columns = KB_SOURCE_COLUMNS if self.config.kb else tuple(self.info.features)
        if self.config.instances_dir:
            for topic, split in product(self.config.topics, SPLITS):
                if not self._prepared_files(topic, split):
                    raise FileNotFoundError(f"No {instance_path(topic, split)} in {self.config.instances_dir}.")
            images = None
        elif self.config.data_dir:
            root = Path(self.config.data_dir)
            find_record_files(root, self.config.topics, self.config.records)  # fail early, naming the missing file
            images = ImageReader(
                root,
                max_image_side=self.config.max_image_side,
                image_size=self.config.image_size,
                max_pixels=self.config.max_pixels,
            )
        else:
            raise ValueError("M3EL needs the raw release: pass data_dir='path/to/release' (the folder of movies.json).")
        self.row_builder = RowBuilder(images=images, columns=columns, on_error=self.config.on_error)
        if images is not None and not self.config.kb and not dl_manager.is_streaming:
            # Every split gets built: one pass over the records writes each split's rows to an Arrow file in
            # the downloads cache, as an extracted archive would be, instead of one pass per split.
            downloads = dl_manager.download_config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH
            files = self._write_split_files(Path(downloads))
            for generator in generators:
                generator.gen_kwargs["rows_file"] = str(files[generator.name])
        return generators

    def _generate_tables(self, split: str, rows_file: str | None = None) -> Iterator[tuple[Key, pa.Table]]:
        topics, builder = self.config.topics, self.row_builder
        if self.config.kb:
            # Topic by topic, so that a multi-topic knowledge base is its topics' ones one after the other.
            tables = (
                table
                for topic in topics
                for table in builder.kb_tables(batch for s in SPLITS for batch in self._instance_batches(s, topic))
            )
        elif rows_file:
            tables = _read_split_file(Path(rows_file))
        else:
            tables = (pa.Table.from_batches([batch]) for t in topics for batch in self._instance_batches(split, t))
        for index, table in enumerate(tables):
            yield Key(0, index), table

    def _write_split_files(self, folder: Path) -> dict[str, Path]:
        """Validate and row every record once, appending each row to its split's Arrow file in `folder`."""
        builder = self.row_builder
        folder.mkdir(parents=True, exist_ok=True)
        # Each file is removed once read, the folder with the last one (or with the builder, if generation stops).
        self._split_folder = tempfile.TemporaryDirectory(prefix="m3el-splits-", dir=folder, ignore_cleanup_errors=True)
        paths = {split: Path(self._split_folder.name) / f"{split}.arrow" for split in SPLITS}
        schema = self.info.features.arrow_schema
        config = self.config
        records = iter_records(config.data_dir, config.topics, config.on_error, builder.report, records=config.records)
        pending = {split: _Batch() for split in SPLITS}
        with ExitStack() as stack:
            writers = {split: stack.enter_context(pa.ipc.new_stream(str(p), schema)) for split, p in paths.items()}
            rows = hf_tqdm(builder.rows(records), desc=f"Reading {self.config.name} records", unit=" instances")
            for split, _, row in rows:
                weight = _row_bytes(row)
                if sum(batch.size for batch in pending.values()) + weight > BATCH_BYTES:
                    _write_batches(writers, pending, schema)
                pending[split].add(row, weight)
            _write_batches(writers, pending, schema)
        return paths

    def _instance_batches(self, split: str, topic: str) -> Iterator[pa.RecordBatch]:
        """One topic's rows of one split, with the row builder's columns, from the prepared files or the raw release."""
        config, builder = self.config, self.row_builder
        if config.instances_dir:
            for path in self._prepared_files(topic, split):
                shard = pq.ParquetFile(path)
                for group in range(shard.num_row_groups):  # a row group at a time: bounded by what prepare wrote
                    yield from shard.read_row_group(group, columns=list(builder.columns)).to_batches()
            return
        # A pass per split (streaming, or a knowledge base from the raw release). Each validates only its own
        # records (matched on their raw key fields), so every record is validated, and its error counted,
        # once. Errors that cannot be matched to a split (malformed lines) recur in every pass and are
        # counted in the first pass only.
        first = split == next(iter(SPLITS))
        records = iter_records(
            config.data_dir,
            (topic,),
            config.on_error,
            builder.report,
            select=lambda key: split_of(key) == split,
            shared_report=None if first else SkipReport(),
            records=config.records,
        )
        # Rows are already in Arrow storage form (images as {"bytes", "path"}), so they are written
        # as tables: no per-example encoding by datasets.
        schema = datasets.Features({name: INSTANCE_FEATURES[name] for name in builder.columns}).arrow_schema
        for batch in _batches(row for _, _, row in builder.rows(records, split)):
            yield pa.RecordBatch.from_pylist(batch, schema=schema)

    def _prepared_files(self, topic: str, split: str) -> list[Path]:
        return sorted(Path(self.config.instances_dir).glob(instance_path(topic, split)))

    @property
    def skip_report(self) -> SkipReport:
        """What was skipped while generating (``on_error="skip"``)."""
        return self.row_builder.report


def _read_split_file(path: Path) -> Iterator[pa.Table]:
    """The tables of a split file written by `M3EL._write_split_files`, one batch in memory at a time (not
    memory-mapped: the pages of a mapped file stay in the process's resident memory); removes the file after."""
    with pa.OSFile(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield pa.Table.from_batches([batch])
    path.unlink()
    with suppress(OSError):  # not empty yet: other splits are still to be read
        path.parent.rmdir()


def _row_bytes(row: dict[str, Any]) -> int:
    """What a row weighs while it waits: its images' bytes, and `_ROW_TEXT_BYTES`."""
    images = [row.get("mention_image"), *(row.get("candidate_images") or ())]
    return _ROW_TEXT_BYTES + sum(len(image["bytes"]) for image in images if image)


class _Batch:
    """Rows waiting to be written, and their weight in bytes (`_row_bytes`)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.size = 0

    def add(self, row: dict[str, Any], weight: int) -> None:
        self.rows.append(row)
        self.size += weight

    def take(self) -> list[dict[str, Any]]:
        """The rows, leaving the batch empty."""
        rows, self.rows, self.size = self.rows, [], 0
        return rows


def _write_batches(writers: dict[str, Any], pending: dict[str, _Batch], schema: pa.Schema) -> None:
    """Write each split's waiting rows as a record batch of its file."""
    for split, batch in pending.items():
        if batch.rows:
            writers[split].write_batch(pa.RecordBatch.from_pylist(batch.take(), schema=schema))


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """`rows` in batches of up to `BATCH_BYTES`."""
    batch = _Batch()
    for row in rows:
        weight = _row_bytes(row)
        if batch.rows and batch.size + weight > BATCH_BYTES:
            yield batch.take()
        batch.add(row, weight)
    if batch.rows:
        yield batch.take()
