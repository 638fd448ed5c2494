"""The error for a malformed raw release, `M3ELFormatError`, and what the records-file readers share to build it.

Each reader reports a bad record as an `M3ELFormatError` naming the file, the record and the kind of fault; the
errors every reader builds alike (a record holding bytes that are not UTF-8, a record over the size cap) are built
here, with the size cap and the means to find an undecodable byte and its byte offset.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = [
    "MAX_RECORD_BYTES",
    "UNDECODABLE",
    "M3ELFormatError",
    "Record",
    "byte_size",
    "not_utf8",
    "too_large",
]

MAX_RECORD_BYTES = 16 << 20
# What ``surrogateescape`` decodes a byte that is not UTF-8 to: U+DC80 to U+DCFF for bytes 0x80 to 0xFF.
UNDECODABLE = re.compile("[\udc80-\udcff]")

Record = tuple[int, int | None, Any]
"""What the readers (`iter_raw_dicts`, `iter_json_array`) yield: record index, line number or None, and the
parsed value or its error."""


class M3ELFormatError(ValueError):
    """A record or image of the raw release is malformed; names the file and the record.

    `key` names the kind of fault in a stable snake_case word that holds nothing from the record
    (``malformed_json``, ``missing_field``, ...), so that `SkipReport` can count by it.
    """

    def __init__(
        self,
        message: str,
        file: str | os.PathLike,
        record: int | None = None,
        line: int | None = None,
        *,
        key: str = "other",
    ):
        self.file, self.record, self.line, self.reason, self.key = str(file), record, line, message, key
        where = str(file)
        if record is not None:
            where += f", record {record}"
        if line is not None:
            where += f" (line {line})"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # The default rebuilds from `args` (the formatted text only); prepare's worker processes
        # send errors back pickled, so rebuild from the parts to keep the fields and the message.
        return type(self), (self.reason, self.file, self.record, self.line), {"key": self.key}


def not_utf8(
    source: str, offset: int, char: str, record: int | None = None, line: int | None = None
) -> M3ELFormatError:
    """The error for a record holding `char`, the ``surrogateescape`` stand-in for the byte at `offset`."""
    return M3ELFormatError(
        f"not UTF-8: byte 0x{ord(char) - 0xDC00:02x} at byte offset {offset} cannot be decoded; save the file as UTF-8",
        source,
        record,
        line,
        key="not_utf8",
    )


def too_large(source: str, record: int, line: int | None = None) -> M3ELFormatError:
    return M3ELFormatError(
        f"record is over the size cap of {MAX_RECORD_BYTES >> 20} MiB (a limit of this reader, not a syntax error)",
        source,
        record,
        line,
        key="record_too_large",
    )


def byte_size(text: str) -> int:
    """The number of bytes `text` was decoded from."""
    return len(text.encode("utf-8", "surrogateescape"))
