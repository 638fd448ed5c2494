"""Reading the raw release's records files one record at a time.

The release is one records file per topic (a JSON array, JSON lines, one Python-literal dict per line, or a
Python-literal list) next to ``{topic}_candidates_images/`` folders. Memory does not grow with the file.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import tokenize
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from ..tasks import TOPICS, check_topics

__all__ = ["RECORD_SUFFIXES", "M3ELFormatError", "find_record_files", "iter_raw_dicts"]

RECORD_SUFFIXES = (".json", ".jsonl", ".txt")
_CHUNK = 1 << 20
_MAX_RECORD_CHARS = 16 << 20
_HEAD_CHARS = 4096


class M3ELFormatError(ValueError):
    """A record or image of the raw release is malformed; names the file and the record."""

    def __init__(self, message: str, file: str | os.PathLike, record: int | None = None, line: int | None = None):
        self.file, self.record, self.line, self.reason = str(file), record, line, message
        where = str(file)
        if record is not None:
            where += f", record {record}"
        if line is not None:
            where += f" (line {line})"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # The default rebuilds from `args` (the formatted text only); prepare's worker processes
        # send errors back pickled, so rebuild from the parts to keep the fields and the message.
        return type(self), (self.reason, self.file, self.record, self.line)


def find_record_files(root: str | Path, topics: tuple[str, ...] = TOPICS) -> dict[str, list[Path]]:
    """Map each topic to its record files: files at the release root whose name starts with the topic.

    Raises `FileNotFoundError` naming the root and the topic when a topic has no file (and which topics to
    prepare instead), and `M3ELFormatError` for a records file that holds no record (empty, blank or ``[]``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Raw M³EL release not found: {root} is not a directory.")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in RECORD_SUFFIXES)
    found: dict[str, list[Path]] = {}
    for topic in check_topics(topics):
        found[topic] = [p for p in files if p.name.lower().startswith(topic)]
        if not found[topic]:
            present = [t for t in TOPICS if any(p.name.lower().startswith(t) for p in files)]
            hint = f"; to prepare the topics it has, pass --topics {' '.join(present)}" if present else ""
            raise FileNotFoundError(
                f"No records file for topic {topic!r} in {root}: expected e.g. {topic}.json or {topic}.jsonl "
                f"(found: {', '.join(p.name for p in files) or 'no record files'}){hint}."
            )
        for path in found[topic]:
            _check_not_empty(path)
    return found


_NO_RECORD = re.compile(r"\s*(\[\s*\])?\s*")


def _check_not_empty(path: Path) -> None:
    """An empty, blank or ``[]`` records file is an error in every mode: it holds no record to keep or count."""
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:
        head = f.read(_HEAD_CHARS)
    if len(head) < _HEAD_CHARS and _NO_RECORD.fullmatch(head):
        raise M3ELFormatError(
            "the records file holds no record (it is empty, blank or an empty list); fill it or remove it", path
        )


def iter_raw_dicts(path: str | Path, source: str | None = None) -> Iterator[tuple[int, int | None, Any]]:
    """Yield ``(record index, line number or None, parsed value)`` from a records file.

    Reads a JSON array or a Python-literal list incrementally (memory does not grow with the file),
    or one JSON or Python-literal object per line (a literal may span several lines). A malformed
    line or list element is yielded as an `M3ELFormatError` value, so a caller may skip it and go
    on; a malformed JSON array cannot be re-synchronised and raises. Errors name the file as
    `source` (default: `path`).
    """
    path = Path(path)
    source = source or str(path)
    with path.open("r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark, as some editors write, is skipped
        head = f.read(_CHUNK)
        first = head.lstrip()[:1]
        if first == "[":
            yield from _iter_json_array(path, source, f, head)
        elif first in ("{", ""):
            # Line by line from the file: memory does not grow with the file. `head` ends mid-line; finish it.
            yield from _iter_lines(source, chain(io.StringIO(head + f.readline()), f))
        else:
            raise M3ELFormatError(f"expected a JSON array or one object per line, found {first!r}", source)


_SEPARATORS = re.compile(r"[\s,]*")


def _iter_json_array(path: Path, source: str, f, buffer: str) -> Iterator[tuple[int, int | None, Any]]:
    decoder = json.JSONDecoder()
    pos, index = buffer.index("[") + 1, 0
    while True:
        pos = _SEPARATORS.match(buffer, pos).end()
        if pos < len(buffer) and buffer[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as error:
            more = f.read(_CHUNK)
            if more and len(buffer) - pos <= _MAX_RECORD_CHARS:
                buffer, pos = buffer[pos:] + more, 0
                continue
            if index == 0 and pos < len(buffer):
                yield from _literal_array(path, source)
                return
            reason = f"malformed JSON ({error.msg})" if pos < len(buffer) else "JSON array is not closed"
            raise M3ELFormatError(f"{reason}; the rest of the file cannot be read", source, index) from None
        yield index, None, value
        index, pos = index + 1, end


def _literal_array(path: Path, source: str) -> Iterator[tuple[int, int | None, Any]]:
    """A whole-file Python-literal list (single quotes), one element at a time.

    Python's tokenizer finds where each top-level element ends, so memory holds one element, never the
    file (evaluating a whole 20 MB list at once takes over 1 GB). An element that is not a literal is
    yielded as an `M3ELFormatError` value, like a malformed line; a file that is not a list raises.
    """
    with path.open("r", encoding="utf-8-sig") as f:
        lines: list[str] = []  # the lines since the current element began; lines[0] is line `first`
        first, depth, start, index = 1, 0, None, 0

        def readline() -> str:
            lines.append(f.readline())
            return lines[-1]

        def element(end: tuple[int, int]) -> str:
            nonlocal first
            (start_row, start_col), (end_row, end_col) = start, end
            chunk = lines[start_row - first : end_row - first + 1]
            del lines[: end_row - first]
            first = end_row
            if len(chunk) == 1:
                return chunk[0][start_col:end_col]
            return chunk[0][start_col:] + "".join(chunk[1:-1]) + chunk[-1][:end_col]

        try:
            for token in tokenize.generate_tokens(readline):
                if token.type in _LAYOUT_TOKENS:
                    continue
                closes = token.type == tokenize.OP and token.string in ")]}"
                if depth == 1 and (closes or token.string == ","):
                    if start is not None:
                        text, line = element(token.start), start[0]
                        try:
                            yield index, line, ast.literal_eval(text)
                        except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
                            yield (
                                index,
                                line,
                                M3ELFormatError(
                                    f"malformed record: not a Python literal ({error})", source, index, line
                                ),
                            )
                        index, start = index + 1, None
                elif depth == 1 and start is None:
                    start = token.start
                elif depth == 0 and not (token.type == tokenize.OP and token.string == "["):
                    raise M3ELFormatError(
                        f"neither a JSON array nor a Python literal list (found {token.string!r})",
                        source,
                        index,
                        token.start[0],
                    )
                if token.type == tokenize.OP and token.string in "([{":
                    depth += 1
                elif closes:
                    depth -= 1
        except (tokenize.TokenError, SyntaxError) as error:
            raise M3ELFormatError(f"Python literal list is not closed or malformed ({error})", source, index) from None
        if depth:
            raise M3ELFormatError("Python literal list is not closed", source, index)


_LAYOUT_TOKENS = frozenset(
    {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
)


def _iter_lines(source: str, lines: Iterable[str]) -> Iterator[tuple[int, int | None, Any]]:
    """One record per line; a Python literal may continue on following lines, but a line that
    starts with ``{`` in column 0 always starts a new record (so one bad line loses nothing else)."""
    index, pending, start = 0, "", 0
    for number, line in enumerate((line.rstrip("\n") for line in lines), start=1):
        if not pending and not line.strip():
            continue
        if pending and line.startswith("{"):
            yield (
                index,
                start,
                M3ELFormatError("malformed record: neither JSON nor a Python literal", source, index, start),
            )
            index, pending = index + 1, ""
        if not pending:
            start = number
        pending += line + "\n"
        value, complete = _parse_object(pending)
        if complete:
            yield index, start, value
            index, pending = index + 1, ""
        elif len(pending) > _MAX_RECORD_CHARS:
            yield index, start, M3ELFormatError("record too long or malformed", source, index, start)
            index, pending = index + 1, ""
    if pending:
        yield index, start, M3ELFormatError("malformed or truncated record at end of file", source, index, start)


def _parse_object(text: str) -> tuple[Any, bool]:
    try:
        return json.loads(text), True
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip()), True
    except (ValueError, SyntaxError):
        return None, False
