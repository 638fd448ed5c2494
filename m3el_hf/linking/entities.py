"""Knowledge bases to link against: a prepared M³EL folder's KB config (or a Hub id's), or a plain list of entities.

A plain list is a CSV file whose header names the columns, or a JSON lines file of one object per entity:
``qid``, ``name`` and ``description`` (required), ``topic`` and ``image`` (optional). An image is a file path,
relative to the list's folder; it is read once, checked by the package's image rule (`load_user_image`: a file
that is not a whole image, or too large, is refused naming the list's line), and its bytes are kept, so an index
built from the list shows its entities' pictures. In any KB an entity listed twice is refused in one line,
unless its two rows are the same (name, description and image): then it is kept once, and the command says so.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from ..images import ImageInputError, load_user_image

__all__ = ["ENTITY_LIST_SUFFIXES", "is_entity_list", "load_kb", "read_entity_list", "unique_entities"]

logger = logging.getLogger(__name__)

ENTITY_LIST_SUFFIXES = (".csv", ".jsonl")
_REQUIRED = ("qid", "name", "description")
_OPTIONAL = ("topic", "image")


def is_entity_list(source: str | Path) -> bool:
    """Whether `source` names a plain entity list (a ``.csv`` or ``.jsonl`` file) rather than a dataset."""
    return Path(source).suffix.lower() in ENTITY_LIST_SUFFIXES


def load_kb(source: str | Path, config: str = "all-kb") -> Any:
    """The entities of `source` as a `datasets.Dataset`: a plain list (`read_entity_list`), or the ``kb`` split of
    a prepared folder's or Hub id's `config`; an entity listed twice is refused or kept once (`unique_entities`)."""
    import datasets

    if is_entity_list(source):
        return read_entity_list(Path(source))
    return unique_entities(datasets.load_dataset(str(source), config, split="kb"), f"{source} ({config})")


def read_entity_list(path: Path) -> Any:
    """The entities of a CSV or JSON lines file, as a `datasets.Dataset` with an ``Image`` column if it has one."""
    import datasets

    if not path.is_file():
        raise FileNotFoundError(f"--kb {path} is not a file.")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    if not rows:
        raise ValueError(f"{path} lists no entity.")
    columns = [c for c in (*_REQUIRED, *_OPTIONAL) if any(c in row for _, row in rows)]
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} column; an entity list needs qid, name and description.")
    table: dict[str, list[Any]] = {c: [] for c in columns}
    for line, row in rows:
        if not str(row.get("qid") or "").strip():
            raise ValueError(f"{path}, line {line}: the entity has no qid.")
        for column in columns:
            value = row.get(column)
            table[column].append(_image(path, line, value) if column == "image" else _text(path, line, column, value))
    features = {c: datasets.Image() if c == "image" else datasets.Value("string") for c in columns}
    entities = datasets.Dataset.from_dict(table, features=datasets.Features(features))
    return unique_entities(entities, str(path), lines=[line for line, _ in rows])


def _csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        return [(reader.line_num, row) for row in reader]


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as file:
        for line, text in enumerate(file, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line}: not JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {line}: a JSON {type(row).__name__}, not an object of one entity.")
            rows.append((line, row))
    return rows


def _text(path: Path, line: int, column: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{path}, line {line}: {column} is {value!r}, not text.")
    return value


def _image(path: Path, line: int, value: Any) -> dict[str, Any] | None:
    """The image file `value` names (relative to the list's folder) as stored bytes, checked by the image rule."""
    if value is None or not str(value).strip():
        return None
    file = path.parent / str(value)
    try:
        data = file.read_bytes()
        load_user_image(data, name=f"{path}, line {line}: image {value}")
    except OSError as error:
        raise ValueError(f"{path}, line {line}: image {value} cannot be read ({error.strerror or error}).") from None
    except ImageInputError as error:
        raise ValueError(str(error)) from None
    return {"bytes": data, "path": None}


def unique_entities(kb: Any, what: str, lines: list[int] | None = None) -> Any:
    """`kb` with each entity once: a qid on two rows that agree (name, description, image) is kept once and said;
    two rows that differ are refused, naming them (by `lines` where given, else by row number)."""
    import datasets

    first: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    qids = kb["qid"]
    for row, qid in enumerate(qids):
        if qid in first:
            repeats.append((first[qid], row))
        else:
            first[qid] = row
    if not repeats:
        return kb
    undecoded = kb.cast_column("image", datasets.Image(decode=False)) if "image" in kb.column_names else kb
    place = (lambda row: f"line {lines[row]}") if lines else (lambda row: f"row {row + 1}")
    for one, other in repeats:
        a, b = undecoded[one], undecoded[other]
        differ = [c for c in ("name", "description", "image") if a.get(c) != b.get(c)]
        if differ:
            raise ValueError(
                f"{what}: entity {a['qid']} is listed twice ({place(one)} and {place(other)}) with a different "
                f"{' and '.join(differ)}; an index holds each entity once, so keep one of them."
            )
    logger.warning(
        "%s: %d entities listed twice with the same name, description and image (e.g. %s); each is kept once.",
        what,
        len(repeats),
        qids[repeats[0][0]],
    )
    return kb.select(sorted(set(range(kb.num_rows)) - {other for _, other in repeats}))
