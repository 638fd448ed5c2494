"""The raw reader: formats, validation of every bad-input case, image path safety."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle

import datasets
import PIL.Image
import pyarrow as pa
import pytest

from m3el_hf.data.features import INSTANCE_FEATURES
from m3el_hf.data.image_paths import ImagePathResolver, resolve_image_path
from m3el_hf.data.instances import KB_SOURCE_COLUMNS, ImageReader, RowBuilder, split_of, usable_tasks
from m3el_hf.data.raw_files import M3ELFormatError, find_record_files, iter_raw_dicts
from m3el_hf.data.records import RawImage, SkipReport, iter_records, parse_record, raw_content_key
from m3el_hf.tasks import TASK_NAMES


def record(qid="Q1", others=("Q2",), **overrides):
    def cand(q):
        return {"Qid": q, "name": "Ann", "description": f"desc {q}", "image": ["a.jpg", "u", f"/M3EL/x/{q}.jpg"]}

    raw = {
        "Qid": qid,
        "name": "Ann",
        "description": f"desc {qid}",
        "sentence": "Ann wrote a book.\n",
        "image": ["a.jpg", "https://commons.wikimedia.org/wiki/Special:FilePath/a.jpg", f"/M3EL/x/{qid}.jpg"],
        "candidates": [cand(q) for q in (*others, qid)],
    }
    raw.update(overrides)
    return raw


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


@pytest.mark.parametrize("text", [json.dumps([record()]), json.dumps(record()), repr([record()])])
def test_a_byte_order_mark_is_skipped(tmp_path, text):
    path = tmp_path / "books.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [value for _, _, value in iter_raw_dicts(path)] == [record()]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["not", "a", "dict"], "record must be an object, got list"),
        ({k: v for k, v in record().items() if k != "Qid"}, "missing required field 'Qid'"),
        ({k: v for k, v in record().items() if k != "name"}, "missing required field 'name'"),
        (record(candidates=None), "missing required field 'candidates'"),
        (record(candidates=[]), "candidate list is empty"),
        (record(qid="Q9", others=("Q2",), Qid="Q5"), "gold Qid Q5 is not among the candidates"),
        (record(others=("Q2", "Q2")), "duplicate candidate Qids: Q2"),
        (record(name=3), "field 'name' must be a string, got int"),
        (record(image=["only-two", "items"]), r"mention image must be \[file name, URL, local path\]"),
    ],
)
def test_parse_record_rejects_bad_records_naming_file_and_record(raw, message):
    with pytest.raises(M3ELFormatError, match=r"^books\.json, record 7: " + message):
        parse(raw)


def write_lines(path, records, literal=False):
    path.write_text("".join((repr(r) if literal else json.dumps(r)) + "\n" for r in records), encoding="utf-8")


@pytest.mark.parametrize("form", ["json", "jsonl", "python", "python-multiline", "python-array"])
def test_every_file_format_reads_the_same_records(tmp_path, form):
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
def test_record_lines_stream_across_the_first_read_chunk(tmp_path, monkeypatch, literal):
    monkeypatch.setattr("m3el_hf.data.raw_files._CHUNK", 64)  # the first read ends in the middle of a line
    records = [record(qid=f"Q{i}", others=(f"Q{100 + i}",)) for i in range(20)]
    path = tmp_path / "movies.jsonl"
    write_lines(path, records, literal)
    read = list(iter_raw_dicts(path))
    assert [value for _, _, value in read] == records and [line for _, line, _ in read] == list(range(1, 21))


def test_malformed_line_is_named_and_skippable(tmp_path):
    path = tmp_path / "movies.jsonl"
    write_lines(path, [record(qid="Q1"), record(qid="Q3")])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"Qid": "Q2", broken', lines[1]]) + "\n")
    with pytest.raises(M3ELFormatError, match=r"movies\.jsonl, record 1 \(line 2\): malformed record"):
        list(iter_records(tmp_path, ("movies",)))
    report = SkipReport()
    assert [r.qid for r in iter_records(tmp_path, ("movies",), "skip", report)] == ["Q1", "Q3"]
    assert report.records_skipped == {"malformed record": 1}


def test_truncated_json_array_raises_with_file_name(tmp_path):
    path = tmp_path / "movies.json"
    path.write_text(json.dumps([record(qid="Q1"), record(qid="Q3")])[:-40])
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 1: .*cannot be read"):
        list(iter_records(tmp_path, ("movies",)))
    report = SkipReport()
    assert [r.qid for r in iter_records(tmp_path, ("movies",), "skip", report)] == ["Q1"]
    assert sum(report.records_skipped.values()) == 1


def test_skip_counts_each_invalid_record_and_keeps_the_rest(tmp_path):
    write_lines(tmp_path / "sports.jsonl", [record(), record(candidates=[]), record(qid="Q7", others=("Q7",))])
    report = SkipReport()
    assert [r.qid for r in iter_records(tmp_path, ("sports",), "skip", report)] == ["Q1"]
    assert report.records_skipped == {"candidate list is empty": 1, "duplicate candidate Qids": 1}
    assert len(report.examples) == 2 and report.examples[0].startswith("sports.jsonl, record 1 (line 2)")


def test_find_record_files_names_missing_topic(tmp_path):
    (tmp_path / "movies.json").write_text("[]")
    assert find_record_files(tmp_path, ("movies",)) == {"movies": [tmp_path / "movies.json"]}
    with pytest.raises(FileNotFoundError, match=r"No records file for topic 'books' in .*found: movies\.json"):
        find_record_files(tmp_path, ("books",))
    with pytest.raises(ValueError, match="Unknown topic 'film'"):
        find_record_files(tmp_path, ("film",))


def make_image(path, size=(12, 10), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new("RGB", size, (200, 10, 10)).save(path, format=fmt)


def test_resolve_image_path_strips_release_root_and_matches_extension_case(tmp_path):
    make_image(tmp_path / "person_candidates_images" / "Ann-Q1" / "Q1.JPG", fmt="JPEG")
    local = "/M3EL/person_candidates_images/Ann-Q1/Q1.jpg"
    assert resolve_image_path(local, tmp_path) == (tmp_path / "person_candidates_images/Ann-Q1/Q1.JPG").resolve()
    assert resolve_image_path("/OtherRelease/person_candidates_images/Ann-Q1/Q1.JPG", tmp_path).name == "Q1.JPG"


def test_resolve_image_path_refuses_to_leave_the_root(tmp_path):
    root = tmp_path / "release"
    make_image(tmp_path / "secret.png")
    (root / "imgs").mkdir(parents=True)
    os.symlink(tmp_path / "secret.png", root / "imgs" / "link.png")
    with pytest.raises(ValueError, match=r"escapes the release root \(contains '\.\.'\)"):
        resolve_image_path("/M3EL/imgs/../../secret.png", root)
    with pytest.raises(ValueError, match=r"escapes the release root \(resolves to"):
        resolve_image_path("/M3EL/imgs/link.png", root)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        resolve_image_path("/M3EL/imgs/none.png", root)


def test_image_reader_checks_decoding_and_shrinks(tmp_path):
    make_image(tmp_path / "imgs" / "big.jpg", size=(64, 32))
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"not an image")
    reader = ImageReader(tmp_path)
    out = reader.read(RawImage("f", "u", "/M3EL/imgs/big.jpg"), "movies.json", 3)
    assert out == {"bytes": (tmp_path / "imgs" / "big.jpg").read_bytes(), "path": None}
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 3: undecodable image: '/M3EL/imgs/bad\.jpg'"):
        reader.read(RawImage("f", "u", "/M3EL/imgs/bad.jpg"), "movies.json", 3)
    with pytest.raises(M3ELFormatError, match=r"record 3: missing image"):
        reader.read(RawImage("f", "u", "/M3EL/imgs/gone.jpg"), "movies.json", 3)
    small = ImageReader(tmp_path, max_image_side=16).read(RawImage("f", "u", "/M3EL/imgs/big.jpg"), "m", 0)

    assert PIL.Image.open(io.BytesIO(small["bytes"])).size == (16, 8)


def test_split_of_is_deterministic_and_close_to_the_ratios():
    keys = [f"{i:016x}" for i in range(4000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02


def test_usable_tasks_follow_the_images_present():
    assert usable_tasks(True, True) == list(TASK_NAMES)
    assert usable_tasks(False, True) == ["T-T", "T-I", "T-TI"]
    assert usable_tasks(True, False) == ["T-T", "I-T", "TI-T"]
    assert usable_tasks(False, False) == ["T-T"]


def test_format_error_survives_pickling_for_worker_processes():
    error = M3ELFormatError("candidate list is empty", "movies.json", 4, 12)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "movies.json, record 4 (line 12): candidate list is empty"
    assert (again.file, again.record, again.line, again.reason) == ("movies.json", 4, 12, "candidate list is empty")


def test_resolver_caches_folders_and_follows_links_inside_the_root(tmp_path):
    make_image(tmp_path / "imgs" / "a.png")
    os.symlink(tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png")
    os.symlink(tmp_path / "imgs", tmp_path / "alias")
    paths = ImagePathResolver(tmp_path, cache_size=1)
    real = str((tmp_path / "imgs" / "a.png").resolve())
    for local in ("/M3EL/imgs/a.png", "imgs/./b.png", "/M3EL/alias/a.png", "\\M3EL\\imgs\\a.png"):
        assert paths.resolve(local) == real
    assert len(paths._dirs) == 1
    with pytest.raises(FileNotFoundError, match=r"image path '/M3EL' names no file"):
        paths.resolve("/M3EL")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        paths.resolve("/M3EL/imgs")


def test_read_bytes_reads_what_resolve_names_and_refuses_the_same_paths(tmp_path):
    root = tmp_path / "release"
    make_image(root / "imgs" / "a.png")
    make_image(root / "imgs" / "Q1.JPG", fmt="JPEG")
    make_image(tmp_path / "secret.png")
    (root / "imgs" / "dir.png").mkdir()
    os.symlink(root / "imgs" / "a.png", root / "imgs" / "b.png")
    os.symlink(tmp_path / "secret.png", root / "imgs" / "out.png")
    os.symlink(root / "imgs", root / "alias")
    make_image(root / "M3EL", fmt="PNG")
    paths = ImagePathResolver(root)
    # Twice each: the first read fills the folder cache, the second takes the one-open path.
    locals_ = ["/M3EL/imgs/a.png", "imgs/./b.png", "/M3EL/alias/a.png", "/M3EL/imgs/Q1.jpg", "\\M3EL\\imgs\\a.png"]
    for local in locals_ * 2:
        with open(paths.resolve(local), "rb") as f:
            assert paths.read_bytes(local) == f.read(), local
    assert paths.read_bytes("M3EL") == (root / "M3EL").read_bytes()  # no leading "/": a file at the root
    with pytest.raises(FileNotFoundError, match=r"image path '/M3EL' names no file"):
        paths.read_bytes("/M3EL")
    with pytest.raises(ValueError, match=r"escapes the release root \(resolves to"):
        paths.read_bytes("/M3EL/imgs/out.png")  # the folder is cached; the link still goes through resolve
    with pytest.raises(ValueError, match=r"contains '\.\.'"):
        paths.read_bytes("/M3EL/imgs/..")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        paths.read_bytes("/M3EL/imgs/dir.png")


def test_read_bytes_never_caches_a_folder_outside_the_root(tmp_path):
    """A folder link leading out of the root, holding a file link leading back in: the first read is
    legitimate, but the outside folder must not become a shortcut for its other files."""
    root, outside = tmp_path / "release", tmp_path / "outside"
    (root / "imgs").mkdir(parents=True)
    outside.mkdir()
    (root / "imgs" / "a.jpg").write_bytes(b"inside")
    (outside / "secret.jpg").write_bytes(b"secret")
    os.symlink(root / "imgs" / "a.jpg", outside / "back.jpg")
    os.symlink(outside, root / "evil")
    paths = ImagePathResolver(root)
    assert paths.read_bytes("/M3EL/evil/back.jpg") == b"inside"
    for _ in range(2):
        with pytest.raises(ValueError, match="escapes the release root"):
            paths.read_bytes("/M3EL/evil/secret.jpg")


def test_image_reader_names_an_unreadable_image(tmp_path, monkeypatch):
    make_image(tmp_path / "imgs" / "a.jpg")

    def denied(self, local):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ImagePathResolver, "read_bytes", denied)
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 2: unreadable image: '/M3EL/imgs/a\.jpg'"):
        ImageReader(tmp_path).read(RawImage("f", "u", "/M3EL/imgs/a.jpg"), "movies.json", 2)


def test_kb_tables_take_an_entity_once_even_when_its_image_comes_later_in_the_batch():
    schema = datasets.Features({name: INSTANCE_FEATURES[name] for name in KB_SOURCE_COLUMNS}).arrow_schema
    image, source = {"bytes": b"jpeg", "path": None}, {"file": "f.jpg", "url": "u"}

    def row(topic, *candidates):
        return {
            "topic": topic,
            "candidates": [{"qid": q, "name": f"name {q}", "description": f"about {q}"} for q, _ in candidates],
            "candidate_images": [image if has else None for _, has in candidates],
            "candidate_image_sources": [source if has else None for _, has in candidates],
        }

    batch = pa.RecordBatch.from_pylist(
        [
            row("movies", ("Q1", False), ("Q2", False)),
            row("movies", ("Q1", True), ("Q3", True)),
            row("books", ("Q1", False)),
        ],
        schema=schema,
    )
    builder = RowBuilder(images=None, columns=KB_SOURCE_COLUMNS)
    kb = pa.concat_tables(builder.kb_tables([batch])).to_pylist()
    assert [(e["topic"], e["qid"], e["image"] is not None) for e in kb] == [
        ("movies", "Q1", True),
        ("movies", "Q3", True),
        ("movies", "Q2", False),
        ("books", "Q1", False),
    ]
    assert kb[0] == {
        "topic": "movies",
        "qid": "Q1",
        "name": "name Q1",
        "description": "about Q1",
        "image": image,
        "image_source": source,
    }
    assert (builder.audit.topic("movies").kb_entities, builder.audit.topic("books").kb_entities) == (3, 1)


def image_bytes(fmt):
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (12, 10), (1, 2, 3)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (image_bytes("JPEG") + b"\0\0\n", None),
        (image_bytes("PNG"), None),
        (image_bytes("GIF"), None),
        (image_bytes("JPEG")[:-40], "JPEG file has no end-of-image marker"),
        (image_bytes("PNG")[:-5], "PNG file has no IEND chunk"),
        (image_bytes("GIF")[:5], "cannot identify image file"),
        (b"\xff\xd8garbage\xff\xd9", "cannot identify image file"),
    ],
)
def test_image_check_catches_truncated_and_non_image_files(tmp_path, data, problem):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.img").write_bytes(data)
    read = ImageReader(tmp_path).read
    if problem is None:
        assert read(RawImage("f", "u", "/M3EL/imgs/x.img"), "m.json", 0)["bytes"] == data
    else:
        with pytest.raises(
            M3ELFormatError, match=rf"m\.json, record 0: undecodable image: '/M3EL/imgs/x\.img' \({problem}"
        ):
            read(RawImage("f", "u", "/M3EL/imgs/x.img"), "m.json", 0)


def test_split_selection_validates_each_record_in_its_own_pass_only(tmp_path):
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
    assert counted.records_skipped == {"candidate list is empty": 30, "field 'name' must be a string, got int": 1}
    assert (
        raw_content_key(record(), "movies") == parse_record(record(), topic="movies", source="s", index=0).content_key
    )
    assert raw_content_key(record(name=3), "movies") is None
