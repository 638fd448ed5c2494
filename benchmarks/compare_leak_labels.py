"""Compare the leak columns of two prepared datasets of one release, row by row.

    python benchmarks/compare_leak_labels.py BEFORE AFTER

BEFORE and AFTER are ``prepare`` outputs (their Parquet shards are read). Prints each one's counts of
``mention_image_leak`` (copy / near / none / null) and of rows with near candidates, then every row whose
``mention_image_leak`` or ``mention_image_near_candidates`` differs, and exits 1 if any does (or if the two
hold different rows). For a change to the fingerprint that may move hash bits: every changed label is listed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

COLUMNS = ["id", "mention_image_leak", "mention_image_near_candidates"]


def leak_columns(prepared: Path) -> dict[str, tuple[str | None, tuple[int, ...]]]:
    """``id -> (mention_image_leak, mention_image_near_candidates)`` over the instance shards of `prepared`."""
    rows = {}
    for path in sorted(prepared.rglob("*.parquet")):
        if set(COLUMNS) <= set(pq.read_schema(path).names):
            for row in pq.read_table(path, columns=COLUMNS).to_pylist():
                rows[row["id"]] = (row["mention_image_leak"], tuple(row["mention_image_near_candidates"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    before, after = leak_columns(args.before), leak_columns(args.after)
    for folder, rows in ((args.before, before), (args.after, after)):
        if not rows:
            parser.error(f"{folder}: no Parquet shard with the leak columns")
    for name, rows in (("before", before), ("after", after)):
        labels = Counter(leak for leak, _ in rows.values())
        near = sum(bool(candidates) for _, candidates in rows.values())
        print(f"{name}: {len(rows)} rows, {dict(sorted(labels.items(), key=str))}, {near} with near candidates")
    changed = sorted(i for i in before.keys() & after.keys() if before[i] != after[i])
    for i in changed:
        print(f"  {i}: {before[i]} -> {after[i]}")
    only = before.keys() ^ after.keys()
    print(f"{len(changed)} rows changed, {len(only)} rows in one dataset only")
    return 1 if changed or only else 0


if __name__ == "__main__":
    sys.exit(main())
