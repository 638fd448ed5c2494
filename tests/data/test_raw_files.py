"""raw_files: finding the records files, reading every file format, and the format error."""

from __future__ import annotations

import ast
import json
import re

import pytest
from raw_record import latin1, record

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
    assert find_record_files(tmp_path, ("movies",)) == {"movies": tmp_path / "movies.json"}
    with pytest.raises(FileNotFoundError, match=r"No records file for topic 'books' in .*found: movies\.json"):
        find_record_files(tmp_path, ("books",))
    # How to go on: the topics the release has.
    with pytest.raises(FileNotFoundError, match=r"to prepare the topics it has, pass --topics movies sports\.$"):
        find_record_files(tmp_path)
    with pytest.raises(ValueError, match=r"Unknown topic\(s\) \['film'\]"):
        find_record_files(tmp_path, ("film",))


@pytest.mark.parametrize(
    ("names", "listed"),
    [
        (["movies.json", "movies_v0.json"], "movies.json, movies_v0.json"),
        (["movies.json", "movies.jsonl"], "movies.json, movies.jsonl"),
        (["movies_old.txt"], "movies_old.txt"),
        (["movies.json", "movies.json.bak"], "movies.json, movies.json.bak"),
    ],
    ids=["older copy", "two formats", "only another name", "backup"],
)
def test_a_topic_reads_one_file_and_refuses_any_other_starting_with_its_name(tmp_path, names, listed):
    for name in names:
        (tmp_path / name).write_text('{"Qid": "Q1"}\n')
    (tmp_path / "sports.json").write_text('{"Qid": "Q2"}\n')
    expected = f"Topic 'movies' has {len(names)} candidate records files"
    with pytest.raises(ValueError, match=re.escape(expected)) as caught:
        find_record_files(tmp_path, ("movies", "sports"))
    assert f"({listed}), but reads one" in str(caught.value)
    assert str(caught.value).endswith("or name the one to read with --records movies=FILE.")
    assert find_record_files(tmp_path, ("sports",)) == {"sports": tmp_path / "sports.json"}
    chosen = find_record_files(tmp_path, ("movies", "sports"), (f"movies={names[-1]}",))
    assert chosen == {"movies": tmp_path / names[-1], "sports": tmp_path / "sports.json"}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (("movies",), "--records movies: expected TOPIC=FILE"),
        (("movies=sub/movies.json",), "--records movies=sub/movies.json: expected TOPIC=FILE"),
        (("movies=a.json", "movies=b.json"), "--records movies=b.json: expected TOPIC=FILE, once per topic"),
        (("films=films.json",), "--records films=films.json: 'films' is not one of the topics movies, common,"),
    ],
)
def test_a_malformed_records_option_is_named(tmp_path, records, message):
    (tmp_path / "movies.json").write_text('{"Qid": "Q1"}\n')
    with pytest.raises(ValueError, match=re.escape(message)):
        find_record_files(tmp_path, ("movies",), records)
    with pytest.raises(FileNotFoundError, match=r"--records movies=gone\.json: no such file in "):
        find_record_files(tmp_path, ("movies",), ("movies=gone.json",))


@pytest.mark.parametrize("content", ["", "  \n\t\n", "[]", "\ufeff[ \n ]\n"], ids=["empty", "blank", "[]", "bom [ ]"])
def test_a_records_file_without_a_record_is_an_error_naming_it(tmp_path, content):
    (tmp_path / "movies.json").write_text(content, encoding="utf-8")
    with pytest.raises(M3ELFormatError, match=r"movies\.json: the records file holds no record"):
        find_record_files(tmp_path, ("movies",))


def test_bytes_that_are_not_utf8_are_named_by_record_line_and_file_offset_in_json_lines(tmp_path):
    records = [record(qid=f"Q{i}", others=(f"Q{10_000 + i}",), name="Zoë Ébert") for i in range(4000)]
    records[3600]["name"] = "BAD"
    lines = b"\xef\xbb\xbf" + b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\r\n" for r in records)
    data, offset = latin1(lines)  # with a byte-order mark and CRLF line ends, counted in the offset
    assert offset > 1 << 20
    (tmp_path / "movies.jsonl").write_bytes(data)
    read = list(iter_raw_dicts(tmp_path / "movies.jsonl", "movies.jsonl"))
    assert [value for _, _, value in read if not isinstance(value, M3ELFormatError)] == records[:3600] + records[3601:]
    assert [line for _, line, _ in read] == list(range(1, 4001))
    assert str(read[3600][2]) == (
        f"movies.jsonl, record 3600 (line 3601): not UTF-8: byte 0xeb at byte offset {offset} cannot be decoded; "
        "save the file as UTF-8"
    )


def test_bytes_that_are_not_utf8_in_a_python_literal_list_are_named_with_their_offset(tmp_path):
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",), name="Zoë") for i in range(3)]
    records[0]["name"] = "BAD"  # in the first record: the file is still read as a Python literal list
    data, offset = latin1(("[" + ",\n ".join(map(repr, records)) + "]").encode())
    (tmp_path / "movies.txt").write_bytes(data)
    read = list(iter_raw_dicts(tmp_path / "movies.txt", "movies.txt"))
    assert [value for _, _, value in read[1:]] == records[1:] and [line for _, line, _ in read] == [1, 2, 3]
    assert str(read[0][2]) == (
        f"movies.txt, record 0 (line 1): not UTF-8: byte 0xeb at byte offset {offset} cannot be decoded; "
        "save the file as UTF-8"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "movies.json: not UTF-8: byte 0xff at byte offset 0"),
        (
            b"\n" * (1 << 20) + b"  \xff\n",
            f"movies.json, record 0 (line {(1 << 20) + 1}): not UTF-8: byte 0xff at byte offset {(1 << 20) + 2}",
        ),
    ],
    ids=["one bad byte", "past 1 MiB of blank lines"],
)
def test_a_records_file_of_bytes_that_are_not_utf8_is_not_empty_but_named_with_the_offset(tmp_path, data, message):
    path = tmp_path / "movies.json"
    path.write_bytes(data)
    assert find_record_files(tmp_path, ("movies",)) == {"movies": path}  # the emptiness check reads past them
    with pytest.raises(M3ELFormatError) as caught:
        for _, _, value in iter_raw_dicts(path, "movies.json"):
            if isinstance(value, M3ELFormatError):
                raise value
    assert str(caught.value) == message + " cannot be decoded; save the file as UTF-8"
    assert caught.value.key == "not_utf8"


@pytest.mark.parametrize("description", ["a" * (17 << 20), "€" * (6 << 20)], ids=["17 MB", "6 M 3-byte characters"])
def test_a_valid_record_line_over_the_size_cap_is_named_as_such_and_passed_over(tmp_path, description):
    records = [record(qid="Q0"), record(qid="Q1", description=description), record(qid="Q2")]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (tmp_path / "movies.jsonl").write_text(lines, encoding="utf-8")
    read = list(iter_raw_dicts(tmp_path / "movies.jsonl", "movies.jsonl"))
    assert [value for _, _, value in read[::2]] == [records[0], records[2]] and len(read) == 3
    message = "record is over the size cap of 16 MiB (a limit of this reader, not a syntax error)"
    assert (str(read[1][2]), read[1][2].key) == (f"movies.jsonl, record 1 (line 2): {message}", "record_too_large")


def test_a_python_literal_list_is_told_by_its_single_quotes_even_when_its_first_element_is_bad(tmp_path):
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(3)]
    path = tmp_path / "movies.txt"
    path.write_text("[{'Qid': 'Q0', 'name': undefined_name},\n " + ",\n ".join(map(repr, records[1:])) + "]")
    read = list(iter_raw_dicts(path, "movies.txt"))
    assert [value for _, _, value in read[1:]] == records[1:] and [line for _, line, _ in read] == [1, 2, 3]
    assert (read[0][2].key, str(read[0][2]).split(": ")[1]) == ("malformed_record", "malformed record")


def test_a_record_line_nested_too_deeply_is_a_malformed_record_not_a_crash(tmp_path):
    first, last, deep = json.dumps(record(qid="Q0")), json.dumps(record(qid="Q2")), "[" * 100_000 + "]" * 100_000
    (tmp_path / "movies.jsonl").write_text(f'{first}\n{{"Qid": {deep}}}\n{last}\n', encoding="utf-8")
    read = list(iter_raw_dicts(tmp_path / "movies.jsonl", "movies.jsonl"))
    assert [value for _, _, value in read[::2]] == [record(qid="Q0"), record(qid="Q2")] and len(read) == 3
    assert str(read[1][2]) == "movies.jsonl, record 1 (line 2): malformed record: neither JSON nor a Python literal"
