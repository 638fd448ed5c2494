"""Parsing and validating the raw release's records: `RawRecord`, `parse_record`, `iter_records`, `SkipReport`.

Records look like::

    {'Qid': 'Q42', 'name': 'Douglas Adams', 'description': 'English author and humourist',
     'sentence': '...', 'image': [commons_file, url, '/M3EL/person_candidates_images/...'],
     'candidates': [{'Qid': ..., 'name': ..., 'description': ..., 'image': [...]}, ...]}
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..tasks import TOPICS
from .raw_files import M3ELFormatError, find_record_files, iter_raw_dicts

__all__ = [
    "OnError",
    "RawCandidate",
    "RawImage",
    "RawRecord",
    "SkipReport",
    "iter_records",
    "parse_record",
    "raw_content_key",
]

OnError = Literal["raise", "skip"]
_STR_OR_NONE = (str, type(None))


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
    """What was skipped under ``on_error="skip"``: counts per reason and the first messages.

    Counts are keyed by `M3ELFormatError.key`, a stable word that holds nothing from the record:

    - records: ``malformed_record`` (a line, or a Python-literal list element), ``not_utf8``,
      ``record_too_large`` (over the 16 MiB cap), ``wrong_type``, ``missing_field``, ``empty_field``,
      ``empty_candidates``, ``duplicate_candidates``, ``gold_not_in_candidates``;
    - images: ``missing_image``, ``unsafe_image_path``, ``unreadable_image``, ``undecodable_image``,
      ``image_too_large``;
    - ``other``: an error raised without a key.

    A file that cannot be read to its end (``malformed_json`` in a JSON array, ``unclosed_array``,
    ``unknown_format``) is never counted here: it stops the run in either mode, as the records after the fault
    would be lost.
    """

    records_skipped: Counter = field(default_factory=Counter)
    images_skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 50

    def add(self, kind: Literal["record", "image"], error: M3ELFormatError) -> None:
        counter = self.records_skipped if kind == "record" else self.images_skipped
        counter[error.key] += 1
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


def _field(raw: dict, key: str, where: tuple, *, required: bool = True, default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise M3ELFormatError(f"missing required field {key!r}", *where, key="missing_field")
        return default
    if not isinstance(value, str):
        raise M3ELFormatError(f"field {key!r} must be a string, got {type(value).__name__}", *where, key="wrong_type")
    if required and not value.strip():
        raise M3ELFormatError(f"field {key!r} is empty", *where, key="empty_field")
    return value


def _image(value: Any, where: tuple, owner: str) -> RawImage | None:
    if value is None or value == [] or value == "":
        return None
    # Unrolled, with a constant tuple rather than `str | None` built per call: runs for every candidate.
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise M3ELFormatError(
            f"{owner} image must be [file name, URL, local path], got {value!r}", *where, key="wrong_type"
        )
    file, url, local = value
    if not (isinstance(file, _STR_OR_NONE) and isinstance(url, _STR_OR_NONE) and isinstance(local, _STR_OR_NONE)):
        raise M3ELFormatError(
            f"{owner} image must be [file name, URL, local path], got {value!r}", *where, key="wrong_type"
        )
    return RawImage(file or "", url or "", local) if local else None


def _sentence(raw: dict[str, Any], where: tuple) -> str:
    """The context sentence: a required field, which may be empty (a mention with no context)."""
    if "sentence" not in raw:
        raise M3ELFormatError(
            'missing required field \'sentence\' (write "sentence": "" for none)', *where, key="missing_field"
        )
    return _field(raw, "sentence", where, required=False)


def parse_record(raw: Any, *, topic: str, source: str, index: int, line: int | None = None) -> RawRecord:
    """Validate one raw record and return it as a `RawRecord`. Pure: touches no file.

    Raises `M3ELFormatError` (naming `source` and `index`) for a record that is not an object,
    misses a required field, has an empty candidate list, duplicate candidate Qids, or a gold
    Qid that is not among its candidates. Unknown fields are kept in `extra`.
    """
    where = (source, index, line)
    if not isinstance(raw, dict):
        raise M3ELFormatError(f"record must be an object, got {type(raw).__name__}", *where, key="wrong_type")
    qid = _field(raw, "Qid", where)
    candidates_raw = raw.get("candidates")
    if candidates_raw is None:
        raise M3ELFormatError("missing required field 'candidates' (a list)", *where, key="missing_field")
    if not isinstance(candidates_raw, list):
        message = f"field 'candidates' must be a list, got {type(candidates_raw).__name__}"
        raise M3ELFormatError(message, *where, key="wrong_type")
    if not candidates_raw:
        raise M3ELFormatError("candidate list is empty", *where, key="empty_candidates")
    candidates = []
    for position, cand in enumerate(candidates_raw):
        if not isinstance(cand, dict):
            raise M3ELFormatError(f"candidate {position} must be an object", *where, key="wrong_type")
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
        raise M3ELFormatError(f"duplicate candidate Qids: {', '.join(duplicates)}", *where, key="duplicate_candidates")
    if qid not in unique:
        raise M3ELFormatError(f"gold Qid {qid} is not among the candidates", *where, key="gold_not_in_candidates")
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
        sentence=_sentence(raw, where),
        image=_image(raw.get("image"), where, "mention"),
        candidates=tuple(candidates),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def iter_records(
    root: str | Path,
    topics: tuple[str, ...] = TOPICS,
    on_error: OnError = "raise",
    report: SkipReport | None = None,
    *,
    select: Callable[[str], bool] | None = None,
    shared_report: SkipReport | None = None,
    records: tuple[str, ...] = (),
) -> Iterator[RawRecord]:
    """Yield the validated records of `topics`, in file order.

    With ``on_error="raise"`` the first bad record raises `M3ELFormatError`; with ``"skip"`` it
    is counted in `report` (required then) and left out. A file that cannot be read to its end raises in
    either mode (`iter_raw_dicts`).

    `select` keeps only the records whose `RawRecord.content_key` it accepts. The key is taken
    from the raw fields (`raw_content_key`) before validation, so a left-out record is neither
    validated nor counted: passes with disjoint selections validate each record once. Errors that
    no key can be taken from (malformed lines, key fields that are not strings) occur in every
    pass and go to `shared_report` (defaults to `report`). `records` names a topic's file
    (`find_record_files`).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_error == "skip" and report is None:
        raise ValueError("on_error='skip' needs a SkipReport to count what is skipped")
    shared = report if shared_report is None else shared_report
    for topic, path in find_record_files(root, topics, records).items():
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
