"""Reading a records file that is a JSON array one element at a time, resynchronising after a bad element.

The file is decoded one chunk at a time, so memory holds one element, never the file. A malformed element costs
only itself: reading resumes after the next ``,`` or ``]`` outside strings and brackets. An element over the size
cap is passed over without being held, and one holding bytes that are not UTF-8 is reported with the byte offset of
the first. What cannot be split into elements (an element that does not end before the end of the file, text after
the closing ``]``) raises, saying from which byte the rest of the file was not read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from .format_errors import MAX_RECORD_BYTES, UNDECODABLE, M3ELFormatError, Record, byte_size, not_utf8, too_large

__all__ = ["iter_json_array"]

_CHUNK = 1 << 20  # bytes decoded at a time

_SEPARATORS = re.compile(r"[\s,]*")
_SPACE = re.compile(r"\s*")


def iter_json_array(
    f: BinaryIO, offset: int, source: str, python_list: Callable[[], Iterator[Record]]
) -> Iterator[Record]:
    """The elements of a JSON array, one at a time. A file whose first quote is a single one is a Python
    literal list (``repr`` of a list of dicts; JSON quotes with double quotes only): `python_list` reads it.

    `f` is read from byte `offset` (past a byte-order mark), where it stands; each element is yielded as
    ``(index, None, value)``, the value being the `M3ELFormatError` that reports a bad one. Errors name the
    file as `source`.
    """
    text = _Text(f, offset)
    decoder = json.JSONDecoder()
    pos, index = text.text.index("[") + 1, 0
    while True:
        pos = _SEPARATORS.match(text.text, pos).end()
        if pos == len(text.text):
            if not text.more(pos):
                raise M3ELFormatError(
                    f"the JSON array is not closed: no ']' before the end of the file at byte {text.offset(pos)}",
                    source,
                    index,
                    key="unclosed_array",
                )
            pos = 0
        elif text.text[pos] == "]":
            _check_nothing_after(text, pos + 1, source)
            return
        elif not index and _first_quote(text.text, pos) == "'":
            yield from python_list()
            return
        else:
            value, pos = _json_element(text, decoder, pos, source, index)
            yield index, None, value
            index += 1


def _json_element(text: _Text, decoder: json.JSONDecoder, pos: int, source: str, index: int) -> tuple[Any, int]:
    """The array element at `text.text[pos]`, or the `M3ELFormatError` that reports it, and the position after it.

    The fast path decodes in place; an element that does not, or may go on past the text read, is first
    delimited by `_find_end`, so that a malformed one is passed over to its end.
    """
    try:
        value, end = decoder.raw_decode(text.text, pos)
        after = _SPACE.match(text.text, end).end()
        if after == len(text.text) or text.text[after] not in ",]":
            end = len(text.text)  # no separator (yet) after it: delimit the element, garbage included
    except (json.JSONDecodeError, RecursionError):
        end = len(text.text)
    failure = None
    if end == len(text.text):
        start, end = _find_end(text, pos, source, index)
        if start is None:
            return too_large(source, index), end
        try:
            value = decoder.decode(text.text[start:end])
        except json.JSONDecodeError as error:
            failure = f"{error.msg.removesuffix(' at')} at byte offset {text.offset(start + error.pos)}"
        except RecursionError:
            failure = "nested too deeply"
        pos = start
    bad = text.undecodable(pos, end)
    if bad is not None:
        value = not_utf8(source, text.offset(bad), text.text[bad], index)
    elif end - pos > MAX_RECORD_BYTES // 4 and text.offset(end) - text.offset(pos) > MAX_RECORD_BYTES:
        value = too_large(source, index)
    elif failure is not None:
        value = M3ELFormatError(f"malformed JSON ({failure})", source, index, key="malformed_json")
    return value, end


def _find_end(text: _Text, pos: int, source: str, index: int) -> tuple[int | None, int]:
    """Delimit the array element at `text.text[pos]`, reading on as needed: it ends before the next ``,`` or
    ``]`` outside strings and brackets (see `_scan`).

    Returns its ``(start, end)`` in `text.text` as it then is; `start` is None for an element over the size
    cap, whose text is dropped as it is read, so memory stays bounded. Raises when the file ends first: the
    rest of the file cannot be split into records.
    """
    start, stack, in_string, dropped_at = pos, bytearray(), False, 0
    while True:
        pos, in_string, found = _scan(text.text, pos, stack, in_string)
        if found:
            return start, pos
        if start is not None and len(text.text) - start > MAX_RECORD_BYTES:
            dropped_at, start = text.offset(start), None
        keep = pos if start is None else start
        if not text.more(keep):
            begin, end = dropped_at if start is None else text.offset(start), text.offset(len(text.text))
            raise M3ELFormatError(
                f"malformed JSON: this record does not end before the end of the file, so the rest of the file "
                f"(bytes {begin} to {end}) was not read",
                source,
                index,
                key="unclosed_array",
            )
        pos -= keep
        if start is not None:
            start = 0


_STRUCTURE = re.compile(r'["\[\]{},]')
_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_OPENER = {"]": b"[", "}": b"{"}


def _scan(text: str, pos: int, stack: bytearray, in_string: bool) -> tuple[int, bool, bool]:
    """Scan JSON `text` from `pos` for a ``,`` or ``]`` outside strings and the brackets open in `stack`.

    Returns ``(position, in_string, found)``: where the ``,`` or ``]`` is, or else where to go on once more
    text is appended, and whether a string is open there. A closing bracket closes back to its opening one,
    or one level when that is not open, so that a bracket lost or added in a bad record does not hide its end.
    """
    while True:
        if in_string:
            pos = _STRING_BODY.match(text, pos).end()
            if pos == len(text) or text[pos] == "\\":  # the string, or its escape, goes on in the text to come
                return pos, True, False
            pos, in_string = pos + 1, False
        found = _STRUCTURE.search(text, pos)
        if found is None:
            return len(text), False, False
        char, pos = found.group(), found.end()
        if char == '"':
            in_string = True
        elif char in "[{":
            stack += char.encode()  # one byte a level
        elif not stack and char != "}":  # a stray "}" at the top is passed over
            return found.start(), False, True
        elif stack and char != ",":
            at = stack.rfind(_OPENER[char])
            del stack[at if at >= 0 else -1 :]


def _check_nothing_after(text: _Text, pos: int, source: str) -> None:
    """Raise when anything but white space follows the array's closing ``]``: that text would go unread."""
    while (pos := _SPACE.match(text.text, pos).end()) == len(text.text):
        if not text.more(pos):
            return
        pos = 0
    raise M3ELFormatError(
        f"text after the end of the JSON array, from byte {text.offset(pos)}, was not read",
        source,
        key="text_after_array",
    )


_QUOTE = re.compile("[\"']")


def _first_quote(text: str, pos: int) -> str | None:
    found = _QUOTE.search(text, pos)
    return None if found is None else found.group()


class _Text:
    """A records file decoded as UTF-8 one chunk at a time, with the byte offsets of its characters.

    `text` holds what is read and not yet dropped. A byte that is not UTF-8 becomes a lone surrogate
    (``surrogateescape``) rather than stopping the read; `undecodable` finds it.
    """

    def __init__(self, f: BinaryIO, offset: int):
        self._f, self._decoder = f, codecs.getincrementaldecoder("utf-8")()
        self._read = self._end = offset  # bytes read, and the byte offset of the end of `text`
        self._anchor: tuple[int, int] | None = None  # a position in `text` and its byte offset
        self._dirty = 0  # `text[:_dirty]` may hold undecodable bytes; the rest holds none
        self.text = ""
        self.more(0)

    def more(self, keep: int) -> bool:
        """Drop `text[:keep]` and append the next chunk; False, dropping nothing, at the end of the file."""
        data = self._f.read(_CHUNK)
        try:
            chunk = self._decoder.decode(data, final=not data)
            dirty = False
        except UnicodeDecodeError:  # decoding again from the same state, with the bad bytes escaped
            self._decoder.errors = "surrogateescape"
            chunk, dirty = self._decoder.decode(data, final=not data), True
            self._decoder.errors = "strict"
        if not data and not chunk:
            return False
        self.text = self.text[keep:] + chunk
        self._read += len(data)
        self._end = self._read - len(self._decoder.getstate()[0])  # less a character cut by the chunk's end
        self._dirty = len(self.text) if dirty else max(0, self._dirty - keep)
        if self._anchor is not None:
            at, offset = self._anchor
            self._anchor = (at - keep, offset) if at >= keep else None
        return True

    def offset(self, pos: int) -> int:
        """The file's byte offset of `text[pos]`."""
        if self._anchor is None or pos < self._anchor[0]:
            offset = self._end - byte_size(self.text[pos:])
        else:
            offset = self._anchor[1] + byte_size(self.text[self._anchor[0] : pos])
        self._anchor = (pos, offset)
        return offset

    def undecodable(self, start: int, end: int) -> int | None:
        """The position of the first undecodable byte in `text[start:end]`, or None."""
        found = UNDECODABLE.search(self.text, start, min(end, self._dirty)) if start < self._dirty else None
        return None if found is None else found.start()
