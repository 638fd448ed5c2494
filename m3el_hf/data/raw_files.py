"""Reading the raw release's records files one record at a time.

The release is one records file per topic (a JSON array, JSON lines, one Python-literal dict per line, or a
Python-literal list) next to ``{topic}_candidates_images/`` folders. Memory does not grow with the file.
`iter_raw_dicts` tells the format apart and reads a JSON array with `json_array` (ijson), the other formats here;
`M3ELFormatError`, which names a bad record, comes from `format_errors` and is exported here too.
"""

from __future__ import annotations

import ast
import codecs
import io
import json
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..tasks import TOPICS, check_topics
from .format_errors import MAX_RECORD_BYTES, UNDECODABLE, M3ELFormatError, Record, byte_size, not_utf8, too_large
from .json_array import iter_json_array

__all__ = ["RECORD_SUFFIXES", "M3ELFormatError", "find_record_files", "iter_raw_dicts", "parse_records_option"]

RECORD_SUFFIXES = (".json", ".jsonl", ".txt")
_CHUNK = 1 << 20
_HEAD_CHARS = 4096
_QUOTE = re.compile(rb"[\"']")


def find_record_files(
    root: str | Path, topics: tuple[str, ...] = TOPICS, records: tuple[str, ...] = ()
) -> dict[str, Path]:
    """Map each topic to its records file: ``{topic}.json``, ``.jsonl`` or ``.txt`` at the release root, or
    the file that `records` names for it (``"movies=movies_v0.json"``, the ``--records`` option).

    Raises `FileNotFoundError` naming the root and the topic when a topic has no file (and which topics to
    prepare instead); `ValueError` when another file at the root starts with a topic's name, or a topic has
    two of the three names (an older copy would be read as well), naming the files and how to choose; and
    `M3ELFormatError` for a records file that holds no record (empty, blank or ``[]``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Raw M³EL release not found: {root} is not a directory.")
    named = parse_records_option(records, TOPICS)  # a builder of one topic gets the whole --records option
    files = sorted(p for p in root.iterdir() if p.is_file())
    found: dict[str, Path] = {}
    for topic in check_topics(topics):
        if topic in named:
            found[topic] = root / named[topic]
            if not found[topic].is_file():
                raise FileNotFoundError(f"--records {topic}={named[topic]}: no such file in {root}.")
        else:
            found[topic] = _topic_file(root, topic, files)
        _check_not_empty(found[topic])
    return found


def parse_records_option(records: tuple[str, ...], topics: tuple[str, ...]) -> dict[str, str]:
    """The ``--records TOPIC=FILE`` values as ``{topic: file name}``; a `ValueError` names a malformed one, or
    one whose topic is not in `topics`."""
    named: dict[str, str] = {}
    for value in records:
        topic, _, name = value.partition("=")
        if not name or Path(name).name != name or topic in named:
            raise ValueError(
                f"--records {value}: expected TOPIC=FILE, once per topic, with FILE a file name at the release root "
                "(e.g. --records movies=movies_v0.json)."
            )
        if topic not in topics:
            raise ValueError(f"--records {value}: {topic!r} is not one of the topics {', '.join(topics)}.")
        named[topic] = name
    return named


def _topic_file(root: Path, topic: str, files: list[Path]) -> Path:
    """The one file at `root` named ``{topic}.json|.jsonl|.txt``, refusing any other whose name starts with `topic`."""
    starting = [p for p in files if p.name.lower().startswith(topic)]
    if not starting:
        records = [p.name for p in files if p.suffix.lower() in RECORD_SUFFIXES]
        present = [t for t in TOPICS if any(name.lower().startswith(t) for name in records)]
        hint = f"; to prepare the topics it has, pass --topics {' '.join(present)}" if present else ""
        raise FileNotFoundError(
            f"No records file for topic {topic!r} in {root}: expected e.g. {topic}.json or {topic}.jsonl "
            f"(found: {', '.join(records) or 'no record files'}){hint}."
        )
    if len(starting) == 1 and starting[0].name.lower() in {topic + suffix for suffix in RECORD_SUFFIXES}:
        return starting[0]
    names = ", ".join(p.name for p in starting)
    raise ValueError(
        f"Topic {topic!r} has {len(starting)} candidate records files in {root} ({names}), "
        f"but reads one, named {topic}.json, {topic}.jsonl or {topic}.txt: remove or rename the others, or name the "
        f"one to read with --records {topic}=FILE."
    )


_NO_RECORD = re.compile(r"\s*(\[\s*\])?\s*")


def _check_not_empty(path: Path) -> None:
    """An empty, blank or ``[]`` records file is an error in every mode: it holds no record to keep or count.

    Bytes that are not UTF-8 count as content here; the reader reports them with their byte offset.
    """
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:
        head = f.read(_HEAD_CHARS)
    if len(head) < _HEAD_CHARS and _NO_RECORD.fullmatch(head):
        raise M3ELFormatError(
            "the records file holds no record (it is empty, blank or an empty list); fill it or remove it",
            path,
            key="empty_file",
        )


def iter_raw_dicts(path: str | Path, source: str | None = None) -> Iterator[Record]:
    """Yield ``(record index, line number or None, parsed value)`` from a records file.

    Reads a JSON array or a Python-literal list incrementally (memory does not grow with the file),
    or one JSON or Python-literal object per line (a literal may span several lines).

    In a JSON array (`json_array`), any syntax error, bytes that are not UTF-8 or an element over the 16 MiB
    size cap raises, naming the record and the byte offset: the array is read no further. In the other
    formats a bad record is yielded as an `M3ELFormatError` value naming it (its `key` says why), so a caller
    may skip it and go on: a malformed line or list element; one over the size cap, passed over without being
    held; one holding bytes that are not UTF-8, with the file's byte offset of the first. A Python-literal
    list that cannot be split into elements raises. Errors name the file as `source` (default: `path`).
    """
    path = Path(path)
    source = source or str(path)
    with path.open("rb") as f:
        head = f.read(_CHUNK)
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0  # as some editors write
        body = head[start:].lstrip()
        f.seek(start)
        if body[:1] == b"[":
            # JSON quotes with double quotes only: a list whose first quote is a single one is a Python literal.
            quote = _QUOTE.search(body)
            literal = quote is not None and quote.group() == b"'"
            yield from _literal_array(path, source) if literal else iter_json_array(f, start, source)
        elif body[:1] in (b"{", b""):
            yield from _iter_lines(source, f)
        else:
            offset, first = len(head) - len(body), body[:4].decode("utf-8", "surrogateescape")[0]
            if UNDECODABLE.match(first):
                raise not_utf8(source, offset, first)
            raise M3ELFormatError(
                f"expected a JSON array or one object per line, found {first!r}", source, key="unknown_format"
            )


def _literal_array(path: Path, source: str) -> Iterator[Record]:
    """A whole-file Python-literal list (single quotes), one element at a time.

    Python's tokenizer finds where each top-level element ends, so memory holds one element, never the
    file (evaluating a whole 20 MB list at once takes over 1 GB). An element that is not a literal, or
    holds bytes that are not UTF-8, is yielded as an `M3ELFormatError` value, like a malformed line; a
    file that is not a list raises.
    """
    with path.open("rb") as raw:
        start = len(codecs.BOM_UTF8) if raw.read(3) == codecs.BOM_UTF8 else 0
        raw.seek(start)
        window = _LineWindow(io.TextIOWrapper(raw, "utf-8", "surrogateescape", newline=""), start)
        depth, begin, index = 0, None, 0
        try:
            for token in tokenize.generate_tokens(window.readline):
                if token.type in _LAYOUT_TOKENS:
                    continue
                closes = token.type == tokenize.OP and token.string in ")]}"
                if depth == 1 and (closes or token.string == ","):
                    if begin is not None:
                        yield index, begin[0], _literal(source, index, begin[0], *window.cut(begin, token.start))
                        index, begin = index + 1, None
                elif depth == 1 and begin is None:
                    begin = token.start
                elif depth == 0 and not (token.type == tokenize.OP and token.string == "["):
                    raise M3ELFormatError(
                        f"neither a JSON array nor a Python literal list (found {token.string!r})",
                        source,
                        index,
                        token.start[0],
                        key="unknown_format",
                    )
                if token.type == tokenize.OP and token.string in "([{":
                    depth += 1
                elif closes:
                    depth -= 1
        except (tokenize.TokenError, SyntaxError) as error:
            message = f"Python literal list is not closed or malformed ({error})"
            raise M3ELFormatError(message, source, index, key="unclosed_array") from None
        if depth:
            raise M3ELFormatError("Python literal list is not closed", source, index, key="unclosed_array")


_LAYOUT_TOKENS = frozenset(
    {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
)


def _literal(source: str, index: int, line: int, text: str, offset: int) -> Any:
    """The value of one Python-literal list element, `text`, which starts at byte `offset`; or its error."""
    bad = UNDECODABLE.search(text)
    if bad is not None:
        return not_utf8(source, offset + byte_size(text[: bad.start()]), bad.group(), index, line)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        return M3ELFormatError(
            f"malformed record: not a Python literal ({error})", source, index, line, key="malformed_record"
        )


class _LineWindow:
    """The lines of a text file read since the current list element began, to cut elements out of
    by tokenizer positions, and the byte offset where each begins.

    The tokenizer reads the lines with undecodable bytes (lone surrogates) replaced, as it cannot take
    them; the elements cut out keep them, to be reported.
    """

    def __init__(self, f: io.TextIOBase, offset: int):
        self._f, self._lines, self._first, self._offset = f, [], 1, offset  # _lines[0]: line _first, at _offset

    def readline(self) -> str:
        self._lines.append(self._f.readline())
        return UNDECODABLE.sub("\ufffd", self._lines[-1])

    def cut(self, start: tuple[int, int], end: tuple[int, int]) -> tuple[str, int]:
        """The text from tokenizer position `start` to `end` and its byte offset; forgets the lines before `end`."""
        (start_row, start_col), (end_row, end_col) = start, end
        chunk = self._lines[start_row - self._first : end_row - self._first + 1]
        offset = (
            self._offset + sum(map(byte_size, self._lines[: start_row - self._first])) + byte_size(chunk[0][:start_col])
        )
        self._offset += sum(map(byte_size, self._lines[: end_row - self._first]))
        del self._lines[: end_row - self._first]
        self._first = end_row
        if len(chunk) == 1:
            return chunk[0][start_col:end_col], offset
        return chunk[0][start_col:] + "".join(chunk[1:-1]) + chunk[-1][:end_col], offset


_CUT_SHORT = "cut short by the end of the file, or neither JSON nor a Python literal"


def _iter_lines(source: str, f: BinaryIO) -> Iterator[Record]:
    """One record per line; a Python literal may continue on following lines, but a line that
    starts with ``{`` in column 0 always starts a new record (so one bad line loses nothing else)."""
    index, pending, size, start, bad = 0, "", 0, 0, None  # bad: pending's first undecodable byte
    for number, (line, length, fault) in enumerate(_lines(f), start=1):
        if line is not None and not pending and not line.strip():
            continue
        if pending and (line is None or line.startswith("{")):
            yield index, start, _unfinished(source, index, start, bad, "neither JSON nor a Python literal")
            index, pending, size, bad = index + 1, "", 0, None
        if line is None:
            yield index, number, too_large(source, index, number)
            index += 1
            continue
        if not pending:
            start = number
        pending, size, bad = pending + line + "\n", size + length, bad or fault
        value, complete = _parse_object(pending)
        if complete:
            yield index, start, value if bad is None else not_utf8(source, *bad, index, start)
        elif size > MAX_RECORD_BYTES:
            yield index, start, too_large(source, index, start)
        if complete or size > MAX_RECORD_BYTES:
            index, pending, size, bad = index + 1, "", 0, None
    if pending:
        yield index, start, _unfinished(source, index, start, bad, _CUT_SHORT)


def _lines(f: BinaryIO) -> Iterator[tuple[str | None, int, tuple[int, str] | None]]:
    """``(text, size, fault)`` for each line of `f`: its text without the line break (undecodable bytes
    replaced), its size in bytes, and where its first undecodable byte is (byte offset and its
    ``surrogateescape`` stand-in) or None. A line over the size cap is passed over unread: its text is None."""
    offset = f.tell()
    while raw := f.readline(MAX_RECORD_BYTES + 1):
        begin, offset = offset, offset + len(raw)
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            while not raw.endswith(b"\n") and (raw := f.readline(_CHUNK)):
                offset += len(raw)
            yield None, offset - begin, None
            continue
        try:
            line, fault = raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            line = raw.decode("utf-8", "replace")
            fault = begin + error.start, raw[error.start : error.start + 1].decode("utf-8", "surrogateescape")
        yield line.rstrip("\r\n"), len(raw), fault


def _unfinished(source: str, index: int, line: int, bad: tuple[int, str] | None, problem: str) -> M3ELFormatError:
    """The error for a record of lines that did not parse: `problem`, or the undecodable byte `bad` it holds."""
    if bad is not None:
        return not_utf8(source, *bad, index, line)
    return M3ELFormatError(f"malformed record: {problem}", source, index, line, key="malformed_record")


def _parse_object(text: str) -> tuple[Any, bool]:
    try:
        return json.loads(text), True
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(text.strip()), True
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None, False
