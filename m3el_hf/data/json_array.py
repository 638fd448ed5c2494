"""Reading a records file that is a JSON array one element at a time, with ijson (yajl's C parser).

Memory holds one read chunk and the element being parsed, never the file. A streaming parser cannot resume after
a syntax error, so a file that does not parse is an error in either ``on_error`` mode, naming the record and the
byte offset where parsing stopped: the records before it are not kept by themselves while the rest is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import ijson

from .format_errors import MAX_RECORD_BYTES, M3ELFormatError, Record

__all__ = ["iter_json_array"]

_CHUNK = 1 << 16  # bytes read at a time; yajl re-reads a token cut by a chunk's end, so not much less
# ijson keeps a path string per level of nesting, so its memory grows with the square of the depth (2 GB at a
# depth of 30,000). An element opening more objects and lists than `_MAX_CONTAINERS` is refused; ijson is handed
# at most `_MAX_OPENING` of them at a time, so the depth stays under 8,192 (170 MB) before that.
_MAX_CONTAINERS = 4096
_MAX_OPENING = 2048
_NO_FURTHER = "a JSON array is read no further, in either --on-error mode: fix the file"


def iter_json_array(f: BinaryIO, start: int, source: str) -> Iterator[Record]:
    """The elements of the JSON array in `f`, read from byte `start` (past a byte-order mark), as
    ``(index, None, value)``; numbers that are not integers are floats, as `json` reads them.

    Raises `M3ELFormatError` (naming the file as `source`) for a syntax error, text after the array, a file
    that ends inside it, or an element over the size cap or of more than `_MAX_CONTAINERS` objects and lists,
    which is not parsed.
    """
    reader = _Reader(f, start, source)
    try:
        for value in ijson.items(reader, "item", use_float=True, buf_size=_CHUNK):
            yield reader.index, None, value
            reader.element_ended()
    except ijson.JSONError as error:
        raise _syntax_error(reader, error) from None


class _Reader:
    """`f` read for ijson, refusing an element over the limits before ijson parses much of it.

    It counts the bytes since an element last ended, and the ``[`` and ``{`` of the pieces handed since then in
    which none ended: all of those are the pending element's.
    """

    def __init__(self, f: BinaryIO, start: int, source: str) -> None:
        self.f, self.start, self.source = f, start, source
        self.index, self.offset, self.chunk, self.rest = 0, start, b"", b""
        self.element_start, self.opened, self.ended = start, 0, False  # no element ends before `element_start`

    def read(self, size: int) -> bytes:
        if not self.ended:
            self.opened += _opening(self.chunk)
        self.ended = False
        if self.opened > _MAX_CONTAINERS or self.offset - self.element_start > MAX_RECORD_BYTES:
            limit = "the size cap" if self.opened <= _MAX_CONTAINERS else f"{_MAX_CONTAINERS:,} objects and lists"
            raise M3ELFormatError(
                f"record is over {limit} (a limit of this reader, not a syntax error); {_NO_FURTHER}",
                self.source,
                self.index,
                key="record_too_large",
            )
        chunk = self.rest or self.f.read(size)
        if _opening(chunk) > _MAX_OPENING:  # at most 2 bytes each: a piece of twice as many bytes holds no more
            chunk, self.rest = chunk[: 2 * _MAX_OPENING], chunk[2 * _MAX_OPENING :]
        else:
            self.rest = b""
        self.chunk = chunk
        self.offset += len(chunk)
        return chunk

    def element_ended(self) -> None:
        """An element ended in the piece handed last."""
        self.index += 1
        self.element_start, self.opened, self.ended = self.offset, 0, True


def _opening(data: bytes) -> int:
    return data.count(b"[") + data.count(b"{")


def _syntax_error(reader: _Reader, error: Exception) -> M3ELFormatError:
    """The error for a syntax error met in the chunk read last: the file is parsed again up to that chunk, then
    a byte at a time, to find the byte where the parser stops."""
    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events)
    chunk, offset = reader.chunk, reader.offset - len(reader.chunk)
    reader.f.seek(reader.start)
    while reader.f.tell() < offset:
        parser.send(reader.f.read(min(_CHUNK, offset - reader.f.tell())))
        events.clear()
    stop = offset
    try:
        for stop in range(offset, offset + len(chunk)):
            parser.send(chunk[stop - offset : stop - offset + 1])
            events.clear()
        stop = offset + len(chunk)
        parser.close()
    except ijson.JSONError:
        pass
    message = error.args[0] if error.args else ""  # yajl's message, sometimes as bytes
    reason = (message.decode(errors="replace") if isinstance(message, bytes) else str(message)).splitlines()[0]
    return M3ELFormatError(
        f"malformed JSON at byte offset {stop} ({reason.rstrip('.')}); {_NO_FURTHER}",
        reader.source,
        reader.index,
        key="malformed_json",
    )
