"""An entity index's Parquet files: the entities and their embeddings written as `datasets` writes an image dataset,
read back a few columns at a time, and their images read a row group at a time for a search's hits.

Read with `pyarrow.parquet.ParquetFile`, not `datasets` or `pyarrow.parquet.read_table` (which goes through
`pyarrow.dataset` and imports pandas): a cold ``m3el-hf link`` imports neither.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["IMAGE_ROW_GROUP", "ImageColumn", "list_array", "parquet_files", "read_parquet", "write_parquet"]

IMAGE_ROW_GROUP = 100
"""Rows per row group where rows carry images, as `datasets` writes them: a reader (the Hub's viewer, a search's
hits) decodes one group to reach a row."""
_CACHED_GROUPS = 64  # row groups of images a loaded index keeps between searches (6,400 images)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write `table` to `path`, in row groups of `IMAGE_ROW_GROUP` rows where it has images."""
    pq.write_table(table, path, row_group_size=IMAGE_ROW_GROUP if "image" in table.column_names else None)


def list_array(vectors: np.ndarray) -> pa.Array:
    """`vectors` as an Arrow list column, one list per row (what `datasets.List(Value("float32"))` stores)."""
    offsets = np.arange(len(vectors) + 1, dtype=np.int32) * vectors.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors.reshape(-1), type=pa.float32()))


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files of an index folder, in order."""
    files = sorted((folder / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder / 'data'} holds no Parquet file: build the index again.")
    return files


def read_parquet(folder: Path, columns: Callable[[list[str]], list[str]]) -> pa.Table:
    """The index's Parquet files as one table, of the columns `columns(names in the files)` picks."""
    files = parquet_files(folder)
    try:
        parquets = [pq.ParquetFile(path) for path in files]
        picked = columns(parquets[0].schema_arrow.names)
        return pa.concat_tables(parquet.read(columns=picked) for parquet in parquets)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{folder / 'data'}: cannot read the entities' Parquet files ({error}).") from None


class ImageColumn:
    """The image column of an index's Parquet files, read one row group at a time for the rows asked (images are
    most of a KB's bytes, and a search shows only its hits'); the last groups read are kept for the next search."""

    def __init__(self, files: list[Path]) -> None:
        parquets = [pq.ParquetFile(path) for path in files]
        self.groups = [(parquet, group) for parquet in parquets for group in range(parquet.metadata.num_row_groups)]
        if "image" not in parquets[0].schema_arrow.names:
            self.groups = []
        sizes = [parquet.metadata.row_group(group).num_rows for parquet, group in self.groups]
        self.firsts = [0, *itertools.accumulate(sizes)][: len(sizes)]
        self._group = functools.lru_cache(maxsize=_CACHED_GROUPS)(self._read_group)

    def _read_group(self, index: int) -> pa.ChunkedArray:
        parquet, group = self.groups[index]
        return parquet.read_row_group(group, columns=["image"]).column(0)

    def take(self, rows: list[int]) -> list[Any]:
        """The undecoded image (``{"bytes", "path"}``, or None) of each of `rows`."""
        if not self.groups:
            return [None] * len(rows)
        out = []
        for row in rows:
            index = bisect.bisect_right(self.firsts, row) - 1
            out.append(self._group(index)[row - self.firsts[index]].as_py())
        return out
