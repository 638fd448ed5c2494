"""raw_files: finding the records files, reading every file format, and the format error."""

from __future__ import annotations

import ast
import json
import pickle

import pytest
from raw_record import record

from m3el_hf.data.raw_files import M3ELFormatError, find_record_files, iter_raw_dicts


@pytest.mark.parametrize("text", [json.dumps([record()]), json.dumps(record()), repr([record()])])
def test_a_byte_order_mark_is_skipped(tmp_path, text):
    path = tmp_path / "books.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [value for _, _, value in iter_raw_dicts(path)] == [record()]


@pytest.mark.parametrize("form", ["json", "jsonl", "python", "python-multiline", "python-array"])
def test_every_file_format_reads_the_same_records(tmp_path, write_lines, form):
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(5)]
    path = tmp_path / "movies.json"
    if form == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif form == "jsonl":
        write_lines(path, records)
    elif form == "python":
        write_lines(path, records, literal=True)
    elif form == "python-multiline":
        path.write_text("\n".join(repr(r).replace(", '", ",\n '") for r in records), encoding="utf-8")
    else:
        path.write_text(repr(records), encoding="utf-8")
    assert [value for _, _, value in iter_raw_dicts(path)] == records


def test_python_literal_list_is_evaluated_one_record_at_a_time(tmp_path, monkeypatch):
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(6)]
    path = tmp_path / "movies.txt"
    # pprint's layout: records span lines; one record is not a literal.
    text = "[" + ",\n ".join(repr(r).replace(", '", ",\n  '") for r in records) + "]\n"
    bad = repr(records[3])
    text = text.replace(bad.replace(", '", ",\n  '"), "{'Qid': 'Q3', 'name': undefined_name}")
    path.write_text(text, encoding="utf-8")
    evaluated = []
    literal_eval = ast.literal_eval
    monkeypatch.setattr(ast, "literal_eval", lambda t: evaluated.append(t) or literal_eval(t))
    read = list(iter_raw_dicts(path, "movies.txt"))
    assert [value for _, _, value in read if not isinstance(value, M3ELFormatError)] == records[:3] + records[4:]
    error = read[3][2]
    assert isinstance(error, M3ELFormatError) and str(error).startswith("movies.txt, record 3 (line ")
    assert "not a Python literal" in str(error)
    assert len(evaluated) == 6 and all(t.lstrip().startswith("{") and t.rstrip().endswith("}") for t in evaluated)
    assert [line for _, line, _ in read] == [1 + text[: text.index(f"'Q{i}'")].count("\n") for i in range(6)]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[{'Qid': 'Q1'},", "not closed"), ("[{'Qid': 'Q1'}] extra", "neither a JSON array nor a Python literal list")],
)
def test_broken_python_literal_list_raises_naming_the_file(tmp_path, text, message):
    path = tmp_path / "movies.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(M3ELFormatError, match=message) as caught:
        list(iter_raw_dicts(path))
    assert caught.value.file.endswith("movies.txt")


def test_json_array_larger_than_the_read_chunk_streams(tmp_path, monkeypatch):
    monkeypatch.setattr("m3el_hf.data.raw_files._CHUNK", 64)
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(20)]
    path = tmp_path / "movies.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert [value for _, _, value in iter_raw_dicts(path)] == records


@pytest.mark.parametrize("literal", [False, True])
def test_record_lines_stream_across_the_first_read_chunk(tmp_path, monkeypatch, write_lines, literal):
    monkeypatch.setattr("m3el_hf.data.raw_files._CHUNK", 64)  # the first read ends in the middle of a line
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(20)]
    path = tmp_path / "movies.jsonl"
    write_lines(path, records, literal)
    read = list(iter_raw_dicts(path))
    assert [value for _, _, value in read] == records and [line for _, line, _ in read] == list(range(1, 21))


def test_find_record_files_names_missing_topic(tmp_path):
    (tmp_path / "movies.json").write_text('[{"Qid": "Q1"}]')
    (tmp_path / "sports.jsonl").write_text('{"Qid": "Q2"}\n')
    assert find_record_files(tmp_path, ("movies",)) == {"movies": [tmp_path / "movies.json"]}
    with pytest.raises(FileNotFoundError, match=r"No records file for topic 'books' in .*found: movies\.json"):
        find_record_files(tmp_path, ("books",))
    # How to go on: the topics the release has.
    with pytest.raises(FileNotFoundError, match=r"to prepare the topics it has, pass --topics movies sports\.$"):
        find_record_files(tmp_path)
    with pytest.raises(ValueError, match=r"Unknown topic\(s\) \['film'\]"):
        find_record_files(tmp_path, ("film",))


def test_format_error_survives_pickling_for_worker_processes():
    error = M3ELFormatError("candidate list is empty", "movies.json", 4, 12)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "movies.json, record 4 (line 12): candidate list is empty"
    assert (again.file, again.record, again.line, again.reason) == ("movies.json", 4, 12, "candidate list is empty")


@pytest.mark.parametrize("content", ["", "  \n\t\n", "[]", "\ufeff[ \n ]\n"], ids=["empty", "blank", "[]", "bom [ ]"])
def test_a_records_file_without_a_record_is_an_error_naming_it(tmp_path, content):
    (tmp_path / "movies.json").write_text(content, encoding="utf-8")
    with pytest.raises(M3ELFormatError, match=r"movies\.json: the records file holds no record"):
        find_record_files(tmp_path, ("movies",))
