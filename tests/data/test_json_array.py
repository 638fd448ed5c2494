"""json_array: a JSON array streamed element by element, in bounded memory; a syntax error stops it, named."""

from __future__ import annotations

import json
import re
import tracemalloc

import pytest
from raw_record import latin1, record

from m3el_hf.data.raw_files import M3ELFormatError, iter_raw_dicts

NO_FURTHER = "a JSON array is read no further, in either --on-error mode: fix the file"


def next_error(read) -> M3ELFormatError:
    """The error that reading the next record raises."""
    with pytest.raises(M3ELFormatError) as caught:
        next(read)
    return caught.value


def test_a_json_array_larger_than_the_read_chunk_streams_the_values_json_reads(tmp_path, monkeypatch):
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", 64)
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",), extra={"score": i / 3, "n": 2**62 + i}) for i in range(20)]
    path = tmp_path / "movies.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    read = list(iter_raw_dicts(path))
    assert [value for _, _, value in read] == json.loads(path.read_text()) == records
    assert [(index, line) for index, line, _ in read] == [(i, None) for i in range(20)]


def test_memory_stays_bounded_on_a_large_array(tmp_path):
    one = json.dumps(record(qid="Q1", others=tuple(f"Q{100 + i}" for i in range(30)), sentence="Ann wrote. " * 20))
    path = tmp_path / "movies.json"
    with path.open("w", encoding="utf-8") as f:
        f.write("[" + ",\n".join([one] * 3000) + "]")
    assert path.stat().st_size > 10 << 20
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_raw_dicts(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 3000 and peak < 2 << 20  # the 1 MiB read to tell the format, a chunk and a record, not the file


@pytest.mark.parametrize(
    ("text", "before", "offset", "problem"),
    [
        ('[{"a": 1}x , {"b": 2}]', [{"a": 1}], 9, "lexical error: invalid char in json text"),
        (
            '[{"a": 1}, {"b": 2} {"c": 3}]',
            [{"a": 1}, {"b": 2}],
            20,
            "parse error: after array element, I expect ',' or ']'",
        ),
        ('[{"a": 1}, {"s": "x\x00y"}]', [{"a": 1}], 19, "lexical error: invalid character inside string"),
        ('[{"a": 1}, {"b": 2}', [{"a": 1}, {"b": 2}], 19, "parse error: premature EOF"),
        ('[{"a": 1}]\n[{"b": 2}]', [{"a": 1}], 11, "parse error: trailing garbage"),
        ('[{"a": NaN}]', [], 7, "lexical error: invalid char in json text"),
    ],
    ids=["garbage after a value", "no comma", "raw NUL", "not closed", "text after the array", "NaN"],
)
@pytest.mark.parametrize("chunk", [1 << 12, 3], ids=["one read", "3-byte reads"])
def test_a_syntax_error_stops_the_file_naming_record_and_byte_offset(
    tmp_path, monkeypatch, chunk, text, before, offset, problem
):
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", chunk)
    path = tmp_path / "movies.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # the offset counts the byte-order mark
    read = iter_raw_dicts(path, "movies.json")
    assert [next(read) for _ in before] == [(i, None, value) for i, value in enumerate(before)]
    error = next_error(read)
    where = f"movies.json, record {len(before)}: malformed JSON at byte offset {offset + 3}"
    assert (str(error), error.key) == (f"{where} ({problem}); {NO_FURTHER}", "malformed_json")


def test_an_integer_over_64_bits_is_an_error_of_the_parser_named_as_such(tmp_path):
    path = tmp_path / "movies.json"
    path.write_text('[{"a": 1}, {"n": 100000000000000000000}]')
    with pytest.raises(
        M3ELFormatError,
        match=r"^movies\.json, record 1: malformed JSON at byte offset \d+ \(parse error: integer overflow\)",
    ):
        list(iter_raw_dicts(path, "movies.json"))


def test_bytes_that_are_not_utf8_stop_a_json_array_near_their_byte_offset(tmp_path):
    records = [record(qid=f"Q{i}", others=(f"Q{10_000 + i}",), name="Zoë Ébert") for i in range(4000)]
    records[3600]["name"] = "BAD"
    data, offset = latin1(json.dumps(records, ensure_ascii=False).encode())
    assert offset > 1 << 20
    (tmp_path / "movies.json").write_bytes(data)
    read = iter_raw_dicts(tmp_path / "movies.json", "movies.json")
    assert [value for _, _, value in (next(read) for _ in range(3600))] == records[:3600]
    found = re.fullmatch(
        r"movies\.json, record 3600: malformed JSON at byte offset (\d+) \(lexical error: invalid bytes in UTF8 "
        rf"string\); {NO_FURTHER}",
        str(next_error(read)),
    )
    assert found and 0 <= int(found.group(1)) - offset <= 3  # where the parser sees the character is not UTF-8


@pytest.mark.parametrize(
    ("element", "limit"),
    [('"' + "a" * (17 << 20) + '"', "the size cap"), ("[" * 100_000 + "]" * 100_000, "4,096 objects and lists")],
    ids=["17 MB", "nested 100,000 deep"],
)
def test_an_element_over_the_limits_is_refused_before_it_is_parsed(tmp_path, element, limit):
    path = tmp_path / "movies.json"
    path.write_text(f'[{json.dumps(record(qid="Q0"))}, {{"Qid": {element}}}, {json.dumps(record(qid="Q2"))}]')
    read = iter_raw_dicts(path, "movies.json")
    assert next(read) == (0, None, record(qid="Q0"))
    error = next_error(read)
    message = f"movies.json, record 1: record is over {limit} (a limit of this reader, not a syntax error)"
    assert (str(error), error.key) == (f"{message}; {NO_FURTHER}", "record_too_large")
