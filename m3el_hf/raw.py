"""Reading and validating the raw M³EL release: record files per topic and image folders.

The release is one records file per topic (a JSON array, JSON lines, one Python-literal dict
per line, or a Python-literal list) next to ``{topic}_candidates_images/`` folders. Records look like::

    {'Qid': 'Q42', 'name': 'Douglas Adams', 'description': 'English author and humourist',
     'sentence': '...', 'image': [commons_file, url, '/M3EL/person_candidates_images/...'],
     'candidates': [{'Qid': ..., 'name': ..., 'description': ..., 'image': [...]}, ...]}
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import stat
import tokenize
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from .tasks import TOPICS

__all__ = [
    "RECORD_SUFFIXES",
    "ImagePathResolver",
    "M3ELFormatError",
    "OnError",
    "RawCandidate",
    "RawImage",
    "RawRecord",
    "SkipReport",
    "find_record_files",
    "iter_raw_dicts",
    "iter_records",
    "parse_record",
    "raw_content_key",
    "resolve_image_path",
]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
RECORD_SUFFIXES = (".json", ".jsonl", ".txt")
_CHUNK = 1 << 20
_MAX_RECORD_CHARS = 16 << 20
_STR_OR_NONE = (str, type(None))


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


@dataclass(frozen=True)
class RawImage:
    """An image reference: Commons file name, source URL and the local path inside the release."""

    file: str
    url: str
    local: str


@dataclass(frozen=True)
class RawCandidate:
    qid: str
    name: str
    description: str
    image: RawImage | None


@dataclass(frozen=True)
class RawRecord:
    """One validated mention-level record. `description` is the gold entity's (never mention-side)."""

    topic: str
    source: str
    index: int
    qid: str
    name: str
    description: str
    sentence: str
    image: RawImage | None
    candidates: tuple[RawCandidate, ...]
    extra: dict[str, Any]

    @property
    def label(self) -> int:
        return next(i for i, c in enumerate(self.candidates) if c.qid == self.qid)

    @property
    def content_key(self) -> str:
        """A digest of what identifies the instance: topic, gold Qid, mention and sentence."""
        return _content_key(self.topic, self.qid, self.name, self.sentence)


def _content_key(topic: str, qid: str, name: str, sentence: str) -> str:
    text = "\x1f".join((topic, qid, name, sentence))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def raw_content_key(raw: Any, topic: str) -> str | None:
    """The `RawRecord.content_key` that `raw` would get if valid, computed without validating it.

    Returns `None` when the key fields (``Qid``, ``name``, ``sentence``) cannot give one (not a
    dict, or a field that is not a string). Lets a split pass skip other splits' records unread.
    """
    if not isinstance(raw, dict):
        return None
    qid, name, sentence = raw.get("Qid"), raw.get("name"), raw.get("sentence")
    if not isinstance(qid, str) or not isinstance(name, str) or not isinstance(sentence, str | None):
        return None
    return _content_key(topic, qid, name, sentence or "")


@dataclass
class SkipReport:
    """What was skipped under ``on_error="skip"``: counts per reason and the first messages."""

    records_skipped: Counter = field(default_factory=Counter)
    images_skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 50

    def add(self, kind: Literal["record", "image"], error: M3ELFormatError) -> None:
        counter = self.records_skipped if kind == "record" else self.images_skipped
        counter[error.reason.split(":")[0]] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    def merge(self, other: SkipReport) -> None:
        """Add `other`'s counts and examples."""
        self.records_skipped.update(other.records_skipped)
        self.images_skipped.update(other.images_skipped)
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])

    @property
    def total(self) -> int:
        return sum(self.records_skipped.values()) + sum(self.images_skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_skipped": dict(sorted(self.records_skipped.items())),
            "images_skipped": dict(sorted(self.images_skipped.items())),
            "examples": list(self.examples),
        }


def find_record_files(root: str | Path, topics: tuple[str, ...] = TOPICS) -> dict[str, list[Path]]:
    """Map each topic to its record files: files at the release root whose name starts with the topic.

    Raises `FileNotFoundError` naming the root and the topic when a topic has no file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Raw M³EL release not found: {root} is not a directory.")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in RECORD_SUFFIXES)
    found: dict[str, list[Path]] = {}
    for topic in topics:
        if topic not in TOPICS:
            raise ValueError(f"Unknown topic {topic!r}; expected some of {', '.join(TOPICS)}.")
        found[topic] = [p for p in files if p.name.lower().startswith(topic)]
        if not found[topic]:
            raise FileNotFoundError(
                f"No records file for topic {topic!r} in {root}: expected e.g. {topic}.json or {topic}.jsonl "
                f"(found: {', '.join(p.name for p in files) or 'no record files'})."
            )
    return found


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


def _field(raw: dict, key: str, where: tuple, *, required: bool = True, default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise M3ELFormatError(f"missing required field {key!r}", *where)
        return default
    if not isinstance(value, str):
        raise M3ELFormatError(f"field {key!r} must be a string, got {type(value).__name__}", *where)
    if required and not value.strip():
        raise M3ELFormatError(f"field {key!r} is empty", *where)
    return value


def _image(value: Any, where: tuple, owner: str) -> RawImage | None:
    if value is None or value == [] or value == "":
        return None
    # Unrolled, with a constant tuple rather than `str | None` built per call: runs for every candidate.
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise M3ELFormatError(f"{owner} image must be [file name, URL, local path], got {value!r}", *where)
    file, url, local = value
    if not (isinstance(file, _STR_OR_NONE) and isinstance(url, _STR_OR_NONE) and isinstance(local, _STR_OR_NONE)):
        raise M3ELFormatError(f"{owner} image must be [file name, URL, local path], got {value!r}", *where)
    return RawImage(file or "", url or "", local) if local else None


def parse_record(raw: Any, *, topic: str, source: str, index: int, line: int | None = None) -> RawRecord:
    """Validate one raw record and return it as a `RawRecord`. Pure: touches no file.

    Raises `M3ELFormatError` (naming `source` and `index`) for a record that is not an object,
    misses a required field, has an empty candidate list, duplicate candidate Qids, or a gold
    Qid that is not among its candidates. Unknown fields are kept in `extra`.
    """
    where = (source, index, line)
    if not isinstance(raw, dict):
        raise M3ELFormatError(f"record must be an object, got {type(raw).__name__}", *where)
    qid = _field(raw, "Qid", where)
    candidates_raw = raw.get("candidates")
    if not isinstance(candidates_raw, list):
        raise M3ELFormatError("missing required field 'candidates' (a list)", *where)
    if not candidates_raw:
        raise M3ELFormatError("candidate list is empty", *where)
    candidates = []
    for position, cand in enumerate(candidates_raw):
        if not isinstance(cand, dict):
            raise M3ELFormatError(f"candidate {position} must be an object", *where)
        cand_qid = _field(cand, "Qid", where)
        candidates.append(
            RawCandidate(
                qid=cand_qid,
                name=_field(cand, "name", where, required=False),
                description=_field(cand, "description", where, required=False),
                image=_image(cand.get("image"), where, f"candidate {cand_qid}"),
            )
        )
    qids = [c.qid for c in candidates]
    unique = set(qids)
    if len(unique) != len(qids):
        duplicates = sorted(q for q, n in Counter(qids).items() if n > 1)
        raise M3ELFormatError(f"duplicate candidate Qids: {', '.join(duplicates)}", *where)
    if qid not in unique:
        raise M3ELFormatError(f"gold Qid {qid} is not among the candidates", *where)
    # The top-level description is the gold entity's: it fills the gold candidate's when that one is empty.
    description = _field(raw, "description", where, required=False)
    gold = next(i for i, c in enumerate(candidates) if c.qid == qid)
    if description and not candidates[gold].description:
        candidates[gold] = dataclasses.replace(candidates[gold], description=description)
    known = {"Qid", "name", "description", "sentence", "image", "candidates"}
    return RawRecord(
        topic=topic,
        source=source,
        index=index,
        qid=qid,
        name=_field(raw, "name", where),
        description=description,
        sentence=_field(raw, "sentence", where, required=False),
        image=_image(raw.get("image"), where, "mention"),
        candidates=tuple(candidates),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def resolve_image_path(local: str, root: str | Path) -> Path:
    """Resolve a release-local image path (``/M3EL/{topic}_candidates_images/...``) under `root`.

    The leading root component of an absolute path names the release, not a real folder, so it
    is replaced by `root`. Raises `ValueError` for a path that escapes `root` (``..`` or a
    symlink pointing outside) and `FileNotFoundError` when no file exists. An extension of
    another case (``.JPG`` for ``.jpg``) is matched when the exact name is absent.
    """
    return Path(ImagePathResolver(root).resolve(local))


class ImagePathResolver:
    """`resolve_image_path` for many images of one release, returning strings, and `read_bytes`.

    The real path of each image folder is cached (an instance folder holds a few images), so a
    file costs one ``lstat`` to resolve and one ``open`` to read; the caches are bounded, so memory
    does not grow with the release.

    >>> paths = ImagePathResolver("release")  # doctest: +SKIP
    >>> paths.resolve("/M3EL/movies_candidates_images/Q1/Q1.jpg")  # doctest: +SKIP
    '/data/release/movies_candidates_images/Q1/Q1.jpg'
    """

    def __init__(self, root: str | Path, cache_size: int = 4096):
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._dirs: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._folders: dict[str, str] = {}

    def resolve(self, local: str) -> str:
        """The real path of `local`'s file under the root; raises like `resolve_image_path`."""
        return self._resolve(local)[0]

    def read_bytes(self, local: str) -> bytes:
        """The bytes of `local`'s file under the root; raises like `resolve`.

        The common case is one ``open`` that refuses a symlink, in a folder whose real path is cached
        under the folder as the record writes it; a link, a missing file or an extension of another
        case goes through `resolve`.
        """
        folder = local[: local.rfind("/") + 1]  # as written, with its last "/": "/M3EL" and "M3EL" differ
        name = local[len(folder) :]
        real = self._folders.get(folder)
        if real is not None and name not in ("", ".", "..") and "\\" not in local:
            try:
                data = _read_regular_file(os.open(real + name, _OPEN_NO_LINK))
            except OSError:
                data = None
            if data is not None:
                return data
        path, real = self._resolve(local)
        # Only folders inside the root: a file link may lead back in from a folder link that leads out.
        if _OPEN_NO_LINK is not None and "\\" not in local and real.startswith(self._prefix):
            if len(self._folders) >= self._cache_size:
                self._folders.clear()
            self._folders[folder] = real + os.sep
        with open(path, "rb") as f:
            return f.read()

    def _resolve(self, local: str) -> tuple[str, str]:
        """`local`'s real path and the real path of the folder it names."""
        parts = [p for p in local.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"image path {local!r} escapes the release root (contains '..')")
        if local.startswith(("/", "\\")):
            parts = parts[1:]
        if not parts:
            raise FileNotFoundError(f"image path {local!r} names no file")
        folder = self._real_dir(os.path.join(self.root, *parts[:-1]))
        resolved = os.path.join(folder, parts[-1])
        mode = _lstat_mode(resolved)
        if mode is not None and stat.S_ISLNK(mode):
            # Resolve symlinks before the containment check: a link inside the release may point anywhere.
            resolved = os.path.realpath(resolved)
            mode = _stat_mode(resolved)
        if mode is None:
            resolved = _other_case(folder, parts[-1]) or resolved
            mode = _stat_mode(resolved)
        if resolved != self.root and not resolved.startswith(self._prefix):
            raise ValueError(f"image path {local!r} escapes the release root (resolves to {Path(resolved)})")
        if mode is None or not stat.S_ISREG(mode):
            candidate = os.path.join(self.root, *parts)
            raise FileNotFoundError(f"image file not found: {local!r} (looked for {Path(candidate)})")
        return resolved, folder

    def _real_dir(self, folder: str) -> str:
        """The real path of `folder` (a path under the root), one ``lstat`` per folder not cached."""
        if folder == self.root:
            return folder
        real = self._dirs.get(folder)
        if real is not None:
            self._dirs.move_to_end(folder)
            return real
        parent, name = os.path.split(folder)
        real = os.path.join(self._real_dir(parent), name)
        mode = _lstat_mode(real)
        if mode is not None and stat.S_ISLNK(mode):
            real = os.path.realpath(real)
        self._dirs[folder] = real
        if len(self._dirs) > self._cache_size:
            self._dirs.popitem(last=False)
        return real


_OPEN_NO_LINK = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_NOFOLLOW")
    else None
)
"""Flags of `ImagePathResolver.read_bytes`'s one ``open``: fails on a final symlink, never blocks on a FIFO
and never takes a terminal."""


def _read_regular_file(fd: int) -> bytes | None:
    """All bytes of the regular file open as `fd`, or None when it is not one; closes `fd`."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        data = os.read(fd, info.st_size)
        while len(data) < info.st_size and (more := os.read(fd, info.st_size - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _stat_mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _other_case(folder: str, name: str) -> str | None:
    """A sibling whose name differs only in the case of the extension; the real path, or None."""
    wanted = PurePosixPath(name)
    try:
        siblings = sorted(os.listdir(folder))
    except OSError:
        return None
    for sibling in siblings:
        other = PurePosixPath(sibling)
        if other.stem == wanted.stem and other.suffix.lower() == wanted.suffix.lower():
            return os.path.realpath(os.path.join(folder, sibling))
    return None


def iter_records(
    root: str | Path,
    topics: tuple[str, ...] = TOPICS,
    on_error: OnError = "raise",
    report: SkipReport | None = None,
    *,
    select: Callable[[str], bool] | None = None,
    shared_report: SkipReport | None = None,
) -> Iterator[RawRecord]:
    """Yield the validated records of `topics`, in file order.

    With ``on_error="raise"`` the first bad record raises `M3ELFormatError`; with ``"skip"`` it
    is counted in `report` (required then) and left out.

    `select` keeps only the records whose `RawRecord.content_key` it accepts. The key is taken
    from the raw fields (`raw_content_key`) before validation, so a left-out record is neither
    validated nor counted: passes with disjoint selections validate each record once. Errors that
    no key can be taken from (malformed lines, key fields that are not strings) occur in every
    pass and go to `shared_report` (defaults to `report`).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_error == "skip" and report is None:
        raise ValueError("on_error='skip' needs a SkipReport to count what is skipped")
    shared = report if shared_report is None else shared_report
    for topic, files in find_record_files(root, topics).items():
        for path in files:
            try:
                for index, line, raw in iter_raw_dicts(path, path.name):
                    key = None if isinstance(raw, M3ELFormatError) else raw_content_key(raw, topic)
                    if select is not None and key is not None and not select(key):
                        continue
                    try:
                        if isinstance(raw, M3ELFormatError):
                            raise raw
                        yield parse_record(raw, topic=topic, source=path.name, index=index, line=line)
                    except M3ELFormatError as error:
                        if on_error == "raise":
                            raise
                        (report if key is not None else shared).add("record", error)
            except M3ELFormatError as error:
                if on_error == "raise" or error.file != path.name:
                    raise
                shared.add("record", error)
                logger.warning("Skipped the rest of %s: %s", path, error)
