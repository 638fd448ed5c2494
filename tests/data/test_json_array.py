"""json_array: streaming a JSON array element by element, resynchronising after a bad one, and its byte offsets."""

from __future__ import annotations

import json

import pytest
from raw_record import latin1, record

from m3el_hf.data.raw_files import M3ELFormatError, iter_raw_dicts


def test_json_array_larger_than_the_read_chunk_streams(tmp_path, monkeypatch):
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", 64)
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(20)]
    path = tmp_path / "movies.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert [value for _, _, value in iter_raw_dicts(path)] == records


@pytest.mark.parametrize("chunk", [1 << 20, 3], ids=["one read", "3-byte reads"])
def test_json_array_resync_is_not_fooled_by_brackets_and_quotes_in_strings(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", chunk)  # 3: reads end inside escapes and strings
    elements = [
        r'{"Qid": "Q0", "name": "a ], } \" ,"}',
        r'{"Qid": "Q1", "name": "\"], {\\", "sentence": "x' + "\x00" + r'y ], \"}"}',  # a raw NUL
        r'{"Qid": "Q2", "name": "}, ] \\"}',  # ends in an escaped backslash
        r'{"Qid": "Q3", "candidates": [{"Qid": "Q3"}}',  # a "]" lost
        r'{"Qid": "Q4", "name": "[[{"}',
        r'{"Qid": "Q5", "x": 1]}',  # a stray "]"
        r'{"Qid": "Q6"}',
    ]
    path = tmp_path / "movies.json"
    path.write_text("[" + ",\n ".join(elements) + "]\n", encoding="utf-8")
    read = list(iter_raw_dicts(path, "movies.json"))
    assert [index for index, _, _ in read] == list(range(7))
    assert [value for _, _, value in read[::2]] == [json.loads(element) for element in elements[::2]]
    assert [(value.key, value.record) for _, _, value in read[1::2]] == [("malformed_json", i) for i in (1, 3, 5)]
    nul = 1 + len(",\n ".join(elements[:1])) + 3 + elements[1].index("\x00")
    assert str(read[1][2]) == f"movies.json, record 1: malformed JSON (Invalid control character at byte offset {nul})"


def test_text_after_the_json_array_is_an_error_not_a_silent_loss(tmp_path):
    path = tmp_path / "movies.json"
    text = json.dumps([record()]) + "\n"
    path.write_text(text + json.dumps([record(qid="Q5")]), encoding="utf-8")
    read = iter_raw_dicts(path, "movies.json")
    assert next(read) == (0, None, record())
    with pytest.raises(M3ELFormatError) as caught:
        next(read)
    assert (
        str(caught.value) == f"movies.json: text after the end of the JSON array, from byte {len(text)}, was not read"
    )
    assert caught.value.key == "text_after_array"


@pytest.mark.parametrize(("chunk", "count"), [(1 << 20, 4000), (5, 40)], ids=["past 1 MiB", "5-byte reads"])
def test_bytes_that_are_not_utf8_are_named_by_record_and_file_offset_in_a_json_array(
    tmp_path, monkeypatch, chunk, count
):
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", chunk)  # 5: reads end inside "ë" (2 bytes)
    records = [record(qid=f"Q{i}", others=(f"Q{10_000 + i}",), name="Zoë Ébert") for i in range(count)]
    bad = count * 9 // 10
    records[bad]["name"] = "BAD"
    data, offset = latin1(json.dumps(records, ensure_ascii=False).encode())
    assert offset > chunk and offset != data.decode("utf-8", "replace").index("\ufffd")  # bytes, not characters
    (tmp_path / "movies.json").write_bytes(data)
    read = list(iter_raw_dicts(tmp_path / "movies.json", "movies.json"))
    kept = records[:bad] + records[bad + 1 :]
    assert [value for _, _, value in read if not isinstance(value, M3ELFormatError)] == kept
    assert str(read[bad][2]) == (
        f"movies.json, record {bad}: not UTF-8: byte 0xeb at byte offset {offset} cannot be decoded; "
        "save the file as UTF-8"
    )


@pytest.mark.parametrize("chunk", [1 << 20, 7, 9], ids=["one read", "7-byte reads", "9-byte reads"])
def test_an_element_without_a_separator_after_it_is_one_malformed_element(tmp_path, monkeypatch, chunk):
    """Garbage after a value, or a missing comma: one error for that element, the same at any read size."""
    monkeypatch.setattr("m3el_hf.data.json_array._CHUNK", chunk)
    path = tmp_path / "movies.json"
    path.write_text('[{"a": 1}x , {"b": 2} {"c": 3}, {"d": 4}]', encoding="utf-8")
    read = list(iter_raw_dicts(path, "movies.json"))
    assert [index for index, _, _ in read] == [0, 1, 2]
    assert [type(value).__name__ for _, _, value in read] == ["M3ELFormatError", "M3ELFormatError", "dict"]
    assert read[2][2] == {"d": 4}
    assert {value.key for _, _, value in read[:2]} == {"malformed_json"}
