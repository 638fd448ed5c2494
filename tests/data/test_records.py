"""records: parsing and validating raw records, skipping bad ones, and content keys."""

from __future__ import annotations

import json

import pytest
from raw_record import record

from m3el_hf.data.instances import split_of
from m3el_hf.data.raw_files import M3ELFormatError
from m3el_hf.data.records import RawImage, SkipReport, iter_records, parse_record, raw_content_key


def parse(raw):
    return parse_record(raw, topic="books", source="books.json", index=7)


def test_parse_record_fields_label_and_extra():
    rec = parse(record(difficulty=2, custom={"a": 1}))
    assert (rec.qid, rec.name, rec.label) == ("Q1", "Ann", 1)
    assert [c.qid for c in rec.candidates] == ["Q2", "Q1"]
    assert rec.image == RawImage("a.jpg", "https://commons.wikimedia.org/wiki/Special:FilePath/a.jpg", "/M3EL/x/Q1.jpg")
    assert rec.extra == {"difficulty": 2, "custom": {"a": 1}}
    assert parse(record(image=[])).image is None


def test_top_level_description_fills_only_an_empty_gold_description():
    gold_empty = record()
    gold_empty["candidates"][1]["description"] = ""
    rec = parse(gold_empty)
    assert [c.description for c in rec.candidates] == ["desc Q2", "desc Q1"]
    other_empty = record()
    other_empty["candidates"][0]["description"] = ""
    assert [c.description for c in parse(other_empty).candidates] == ["", "desc Q1"]
    assert [c.description for c in parse(record(description="other words")).candidates] == ["desc Q2", "desc Q1"]


@pytest.mark.parametrize(
    ("raw", "message", "key"),
    [
        (["not", "a", "dict"], "record must be an object, got list", "wrong_type"),
        ({k: v for k, v in record().items() if k != "Qid"}, "missing required field 'Qid'", "missing_field"),
        ({k: v for k, v in record().items() if k != "name"}, "missing required field 'name'", "missing_field"),
        ({k: v for k, v in record().items() if k != "sentence"}, "missing required field 'sentence'", "missing_field"),
        (record(name=" "), "field 'name' is empty", "empty_field"),
        (record(candidates=None), "missing required field 'candidates'", "missing_field"),
        (record(candidates="Q2"), "field 'candidates' must be a list, got str", "wrong_type"),
        (record(candidates=["Q2"]), "candidate 0 must be an object", "wrong_type"),
        (record(candidates=[]), "candidate list is empty", "empty_candidates"),
        (
            record(qid="Q9", others=("Q2",), Qid="Q5"),
            "gold Qid Q5 is not among the candidates",
            "gold_not_in_candidates",
        ),
        (record(others=("Q2", "Q2")), "duplicate candidate Qids: Q2", "duplicate_candidates"),
        (record(name=3), "field 'name' must be a string, got int", "wrong_type"),
        (record(image=["only-two", "items"]), r"mention image must be \[file name, URL, local path\]", "wrong_type"),
        (record(image=[1, "u", "p"]), r"mention image must be \[file name, URL, local path\]", "wrong_type"),
    ],
)
def test_parse_record_rejects_bad_records_naming_file_and_record(raw, message, key):
    with pytest.raises(M3ELFormatError, match=r"^books\.json, record 7: " + message) as caught:
        parse(raw)
    assert caught.value.key == key


def test_malformed_line_is_named_and_skippable(tmp_path, write_lines):
    path = tmp_path / "movies.jsonl"
    write_lines(path, [record(qid="Q1"), record(qid="Q3")])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"Qid": "Q2", broken', lines[1]]) + "\n")
    with pytest.raises(M3ELFormatError, match=r"movies\.jsonl, record 1 \(line 2\): malformed record"):
        list(iter_records(tmp_path, ("movies",)))
    report = SkipReport()
    assert [r.qid for r in iter_records(tmp_path, ("movies",), "skip", report)] == ["Q1", "Q3"]
    assert report.records_skipped == {"malformed_record": 1}


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_json_array_that_does_not_parse_stops_either_mode_naming_record_and_offset(tmp_path, on_error):
    """A streaming parser cannot resume after a syntax error: counting it would lose the rest of the file."""
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(60)]
    records[25]["sentence"] = "BAD"
    text = json.dumps(records).replace('"BAD"', '"Ann\x00wrote"')  # a raw NUL, which JSON forbids in strings
    (tmp_path / "movies.json").write_text(text, encoding="utf-8")
    message = (
        f"movies.json, record 25: malformed JSON at byte offset {text.index(chr(0))} (lexical error: invalid "
        "character inside string); a JSON array is read no further, in either --on-error mode: fix the file"
    )
    with pytest.raises(M3ELFormatError) as caught:
        list(iter_records(tmp_path, ("movies",), on_error, SkipReport()))
    assert (str(caught.value), caught.value.file, caught.value.record) == (message, "movies.json", 25)


def test_skip_counts_each_invalid_record_and_keeps_the_rest(tmp_path, write_lines):
    write_lines(tmp_path / "sports.jsonl", [record(), record(candidates=[]), record(qid="Q7", others=("Q7",))])
    report = SkipReport()
    assert [r.qid for r in iter_records(tmp_path, ("sports",), "skip", report)] == ["Q1"]
    assert report.records_skipped == {"empty_candidates": 1, "duplicate_candidates": 1}
    assert len(report.examples) == 2 and report.examples[0].startswith("sports.jsonl, record 1 (line 2)")


def test_split_selection_validates_each_record_in_its_own_pass_only(tmp_path, write_lines):
    bad = [record(qid=f"Q{i}", others=(f"Q{100 + i}",), candidates=[]) for i in range(30)]
    write_lines(tmp_path / "movies.jsonl", [*bad, record(name=3), record()])
    counted, kept = SkipReport(), []
    for split in ("train", "validation", "test"):
        shared = None if split == "train" else SkipReport()
        select = lambda key, s=split: split_of(key) == s  # noqa: E731
        kept += [
            (split, r.qid)
            for r in iter_records(tmp_path, ("movies",), "skip", counted, select=select, shared_report=shared)
        ]
    assert kept == [(split_of(parse_record(record(), topic="movies", source="s", index=0).content_key), "Q1")]
    assert counted.records_skipped == {"empty_candidates": 30, "wrong_type": 1}
    assert (
        raw_content_key(record(), "movies") == parse_record(record(), topic="movies", source="s", index=0).content_key
    )
    assert raw_content_key(record(name=3), "movies") is None


def test_an_empty_sentence_is_kept_a_missing_one_is_an_error():
    assert parse_record(record(sentence=""), topic="movies", source="movies.json", index=0).sentence == ""
    without = {k: v for k, v in record().items() if k != "sentence"}
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 0: missing required field 'sentence'"):
        parse_record(without, topic="movies", source="movies.json", index=0)


def test_skip_reasons_are_counted_by_stable_key_and_reports_repeat_exactly(tmp_path, write_lines):
    url = "https://commons.wikimedia.org/wiki/Special:FilePath/{}.jpg"
    write_lines(
        tmp_path / "movies.jsonl",
        [
            record(image=["a.jpg", url.format("a")]),  # a URL, with its ":", before any colon of the message
            record(image=["b.jpg", url.format("b")]),
            record(qid="Q9", Qid="Q5"),  # a message without a colon, naming the Qid
            record(qid="Q8", Qid="Q6"),
            record(qid="Q7"),
        ],
    )
    reports = [SkipReport(), SkipReport()]
    for report in reports:
        assert [r.qid for r in iter_records(tmp_path, ("movies",), "skip", report)] == ["Q7"]
    assert reports[0].records_skipped == {"wrong_type": 2, "gold_not_in_candidates": 2}
    assert reports[0].to_dict() == reports[1].to_dict()
    assert json.dumps(reports[0].to_dict()) == json.dumps(reports[1].to_dict())
    assert (
        reports[0].to_dict()["examples"][2]
        == "movies.jsonl, record 2 (line 3): gold Qid Q5 is not among the candidates"
    )
