import argparse
import ast
import dataclasses
import hashlib
import io
import json
import re
import urllib.parse
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from m3el_hf.arguments import add_dataclass_arguments, dataclass_from_namespace
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.tasks import TOPICS

N = 500


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_records(root: Path, topic: str, fmt: str = "json") -> list[dict]:
    text = (root / f"{topic}.json").read_text(encoding="utf-8")
    if fmt == "json":
        return json.loads(text)
    parse = json.loads if fmt == "jsonl" else ast.literal_eval
    return [parse(line) for line in text.splitlines()]


def local_file(root: Path, image: list[str]) -> Path:
    return root / image[2].removeprefix("/M3EL/")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("synth") / "release", instances=N, seed=3))


@pytest.fixture(scope="module")
def records(release) -> list[tuple[str, dict]]:
    return [(topic, record) for topic in TOPICS for record in load_records(release, topic)]


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = synthesize(SynthConfig(out=tmp_path / "a", instances=60, seed=1))
    b = synthesize(SynthConfig(out=tmp_path / "b", instances=60, seed=1))
    c = synthesize(SynthConfig(out=tmp_path / "c", instances=60, seed=2))
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_formats_parse_back_to_the_same_records(tmp_path):
    parsed = {}
    for fmt in ("json", "jsonl", "python"):
        root = synthesize(SynthConfig(out=tmp_path / fmt, instances=40, topics=("person", "books"), format=fmt))
        parsed[fmt] = [load_records(root, topic, fmt) for topic in ("person", "books")]
        assert all(len(r) == 20 for r in parsed[fmt])
    assert parsed["json"] == parsed["jsonl"] == parsed["python"]
    # Person names include apostrophes ("O'…"), which `repr` must quote correctly.
    assert any("'" in record["name"] for record in parsed["python"][0])


def test_records_have_the_real_schema(records):
    assert len(records) == N
    for _, record in records:
        assert {"Qid", "name", "description", "sentence", "image", "candidates"} <= record.keys()
        assert set(record) <= {"Qid", "name", "description", "sentence", "image", "candidates", "difficulty"}
        assert all(isinstance(record[key], str) and record[key] for key in ("Qid", "name", "description", "sentence"))
        assert re.fullmatch(r"Q\d+", record["Qid"]) and not re.search(r"[/\\:*?\"<>|]", record["name"])
        qids = [c["Qid"] for c in record["candidates"]]
        assert record["Qid"] in qids and len(set(qids)) == len(qids)
        assert 2 <= len(qids) <= 7
        gold = record["candidates"][qids.index(record["Qid"])]
        assert (gold["name"], gold["description"]) == (record["name"], record["description"])
        assert record["name"] in record["sentence"]
        assert record["description"] not in record["sentence"]
        for image in [record["image"]] + [c["image"] for c in record["candidates"]]:
            assert image == [] or (len(image) == 3 and all(isinstance(part, str) for part in image))
    with_difficulty = sum("difficulty" in record for _, record in records)
    assert 0 < with_difficulty < N
    assert len({record["candidates"][0]["Qid"] == record["Qid"] for _, record in records}) == 2


def test_image_references_resolve_and_follow_the_path_pattern(release, records):
    extensions = set()
    for topic, record in records:
        folder = f"/M3EL/{topic}_candidates_images/{re.escape(record['name'])}-{record['Qid']}/"
        for candidate in record["candidates"]:
            if candidate["image"]:
                file, url, local = candidate["image"]
                assert re.fullmatch(folder + re.escape(candidate["Qid"]) + r"\.(jpg|JPG|png)", local)
                assert url == "https://commons.wikimedia.org/wiki/Special:FilePath/" + urllib.parse.quote(file)
                assert local_file(release, candidate["image"]).is_file()
                extensions.add(local.rpartition(".")[2])
        if record["image"]:
            assert re.fullmatch(folder + r"[^/]+\.(jpg|JPG|png)", record["image"][2])
            assert local_file(release, record["image"]).is_file()
    assert extensions == {"jpg", "JPG", "png"}
    with Image.open(next(release.rglob("*.png"))) as image:
        assert image.size == (32, 32)


def test_an_entity_is_the_same_everywhere(release, records):
    seen: dict[str, tuple] = {}
    counts: dict[str, int] = defaultdict(int)
    for _, record in records:
        for c in record["candidates"]:
            data = local_file(release, c["image"]).read_bytes() if c["image"] else None
            entity = (c["name"], c["description"], c["image"][:2], data)
            assert seen.setdefault(c["Qid"], entity) == entity, c["Qid"]
            counts[c["Qid"]] += 1
    assert max(counts.values()) >= 3  # the knowledge base is shared between instances
    # Qids are unique across topics.
    by_topic = defaultdict(set)
    for topic, record in records:
        by_topic[topic].update(c["Qid"] for c in record["candidates"])
    assert sum(map(len, by_topic.values())) == len(set().union(*by_topic.values()))


def test_names_are_ambiguous_and_descriptions_disambiguate(records):
    descriptions = defaultdict(set)
    for _, record in records:
        for c in record["candidates"]:
            descriptions[c["name"]].add(c["description"])
    assert sum(len(d) >= 2 for d in descriptions.values()) > N // 10
    for _, record in records:
        same_name = [c["description"] for c in record["candidates"] if c["name"] == record["name"]]
        assert len(same_name) >= 2 and len(set(same_name)) == len(same_name)


def test_about_ten_percent_of_mention_images_are_the_gold_file(release, records):
    reused = 0
    for _, record in records:
        gold = next(c for c in record["candidates"] if c["Qid"] == record["Qid"])
        if record["image"] and record["image"] == gold["image"]:
            reused += 1
        elif record["image"] and gold["image"]:
            assert record["image"][0] != gold["image"][0]
            assert local_file(release, record["image"]).read_bytes() != local_file(release, gold["image"]).read_bytes()
    assert 0.05 * N <= reused <= 0.16 * N


def test_some_images_are_missing(records):
    mentions = sum(record["image"] == [] for _, record in records)
    candidates = [c["image"] == [] for _, record in records for c in record["candidates"]]
    assert 0 < mentions < 0.08 * N
    assert 0 < sum(candidates) < 0.08 * len(candidates)


def test_about_four_images_per_instance(release):
    files = [p for p in release.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".png")]
    assert 3.6 <= len(files) / N <= 4.4
    assert len({p.parent for p in files}) >= 0.95 * N  # one folder per instance


def test_description_words_predict_the_gold(records):
    """A word-overlap oracle between sentence and candidate descriptions beats chance by far."""

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+", text.lower()))

    hits = chance = 0.0
    for _, record in records:
        same_name = [c for c in record["candidates"] if c["name"] == record["name"]]
        sentence = words(record["sentence"])
        best = max(same_name, key=lambda c: len(words(c["description"]) & sentence))
        hits += best["Qid"] == record["Qid"]
        chance += 1 / len(same_name)
    assert hits / N > chance / N + 0.3


def test_topics_are_respected_and_instances_spread_evenly(tmp_path):
    root = synthesize(SynthConfig(out=tmp_path / "r", instances=5, topics=("books", "sports")))
    assert sorted(p.name for p in root.iterdir()) == [
        "books.json",
        "books_candidates_images",
        "m3el-hf-synth.json",
        "sports.json",
        "sports_candidates_images",
    ]
    marker = json.loads((root / "m3el-hf-synth.json").read_text())
    assert marker["generator"] == "m3el-hf synth" and (marker["instances"], marker["topics"]) == (
        5,
        ["books", "sports"],
    )
    assert [len(load_records(root, t)) for t in ("books", "sports")] == [3, 2]
    root = synthesize(SynthConfig(out=tmp_path / "few", instances=2, format="jsonl"))
    assert [len(load_records(root, t, "jsonl")) for t in TOPICS] == [1, 1, 0, 0, 0]
    assert json.loads((synthesize(SynthConfig(out=tmp_path / "few2", instances=2)) / "sports.json").read_text()) == []


def test_image_size_option(tmp_path):
    root = synthesize(SynthConfig(out=tmp_path / "r", instances=3, topics=("common",), image_size=20))
    with Image.open(io.BytesIO(next(root.rglob("*.jpg")).read_bytes())) as image:
        assert image.size == (20, 20)


def test_existing_out_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(
        FileExistsError,
        match=r"r already exists and is not empty; pass --overwrite to replace it",
    ):
        synthesize(SynthConfig(out=out, instances=3))
    assert (out / "keep.txt").exists()
    synthesize(SynthConfig(out=out, instances=3, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "movies.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instances": 0}, r"`instances` must be an integer >= 1, got 0"),
        ({"image_size": 4}, r"`image_size` must be an integer between 8 and 512, got 4"),
        ({"topics": ("movies", "cars")}, r"Unknown topic\(s\) \['cars'\]; choose from movies, common"),
        ({"topics": ("books", "books")}, r"Topics must be distinct and at least one, got \['books', 'books'\]"),
        ({"format": "csv"}, r"`format` must be one of json, jsonl, python, got 'csv'"),
    ],
)
def test_config_validation(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthConfig(out=tmp_path, **kwargs)


def test_config_builds_a_cli(tmp_path):
    assert all(f.metadata.get("help") for f in dataclasses.fields(SynthConfig))
    parser = add_dataclass_arguments(argparse.ArgumentParser(), SynthConfig)
    args = parser.parse_args(["--out", str(tmp_path), "--topics", "books", "person", "--format", "python"])
    config = dataclass_from_namespace(SynthConfig, args)
    assert config == SynthConfig(out=tmp_path, topics=("books", "person"), format="python")
