import argparse
import ast
import dataclasses
import hashlib
import io
import json
import re
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from m3el_hf.arguments import add_dataclass_arguments, dataclass_from_namespace
from m3el_hf.data.leak import LeakDetector
from m3el_hf.data.synth import _VOCAB, SynthConfig, synthesize
from m3el_hf.data.synth_images import COLOURS
from m3el_hf.tasks import TOPICS

N = 500
# A drawn release (60 instances, seed 1) without its marker, as written since pictures became scenes (an
# identity object among distractors): the demo's scores depend on these bytes (Pillow's bundled JPEG and PNG
# encoders).
DRAWN_DIGEST = "7680f090bd3abeddd882649b94389759c548e4eac8deeab7b72b33e4700bf4f4"


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip):
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


def upright(path: Path) -> tuple[Image.Image, str]:
    """An image file as upright 8-bit RGB (a JPEG decoded at a reduced scale: 64 px a side or more), and its mode."""
    with Image.open(path) as image:
        image.draft(None, (64, 64))
        mode, image = image.mode, ImageOps.exif_transpose(image)
        if mode == "I;16":
            image = Image.fromarray((np.asarray(image) // 257).astype(np.uint8))
        return image.convert("RGB"), mode


def instances(root: Path):
    """Per instance with a mention image: its record, the mention's file, the candidates' files and the gold's index."""
    for topic in TOPICS:
        for record in load_records(root, topic):
            if record["image"]:
                files = [local_file(root, c["image"]) if c["image"] else None for c in record["candidates"]]
                label = [c["Qid"] for c in record["candidates"]].index(record["Qid"])
                yield topic, record, local_file(root, record["image"]), files, label


def gold_image(record: dict) -> list[str]:
    return next(c["image"] for c in record["candidates"] if c["Qid"] == record["Qid"])


def is_copy(record: dict) -> bool:
    """Whether the mention's image is the gold's file."""
    return bool(record["image"]) and record["image"] == gold_image(record)


def colour_shares(path: Path) -> tuple[np.ndarray, str]:
    """Per attribute, the share of a 32 × 32 thumbnail's pixels within 45 of its colour (grey files: of its
    luminance, within 22.5); and the file's mode."""
    image, mode = upright(path)
    thumbnail = np.asarray(image.resize((32, 32), Image.Resampling.BOX), dtype=np.float32).reshape(-1, 1, 3)
    colours = np.array(COLOURS, dtype=np.float32)
    if mode in ("L", "I;16"):
        lumas = colours @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (np.abs(thumbnail[:, :, 0] - lumas) < 22.5).mean(axis=0), mode
    return (np.linalg.norm(thumbnail - colours, axis=2) < 45).mean(axis=0), mode


def pixel_nearest_share(root: Path) -> tuple[float, float]:
    """How often the gold's picture is the nearest to a non-copy mention picture (L2 over 16 × 16 greyscale
    thumbnails, among at least 2 candidates with an image), and the chance of it."""

    def thumbnail(path: Path) -> np.ndarray:
        return np.asarray(upright(path)[0].convert("L").resize((16, 16), Image.Resampling.BOX), dtype=np.float32)

    hits, chance = [], []
    for _, record, mention, files, label in instances(root):
        shown = [i for i, file in enumerate(files) if file is not None]
        if is_copy(record) or files[label] is None or len(shown) < 2:
            continue
        target = thumbnail(mention)
        distances = [np.linalg.norm(thumbnail(files[i]) - target) for i in shown]
        hits.append(shown[int(np.argmin(distances))] == label)
        chance.append(1 / len(shown))
    print(f"gold nearest by pixels: {np.mean(hits):.3f}, chance {np.mean(chance):.3f}, over {len(hits)} instances")
    return float(np.mean(hits)), float(np.mean(chance))


def leak_kinds(root: Path) -> tuple[Counter, Counter]:
    """`LeakDetector` verdicts of instances whose gold has an image: for copies, and for other mention pictures."""
    detector, copies, others = LeakDetector(), Counter(), Counter()
    for _, record, mention, files, label in instances(root):
        if files[label] is not None:
            kind, _ = detector.check(mention.read_bytes(), [f.read_bytes() if f else None for f in files], label)
            (copies if is_copy(record) else others)[kind] += 1
    print(f"copies: {dict(copies)}, other mention pictures: {dict(others)}")
    return copies, others


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("synth") / "release", instances=N, seed=3))


@pytest.fixture(scope="module")
def records(release) -> list[tuple[str, dict]]:
    return [(topic, record) for topic in TOPICS for record in load_records(release, topic)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """A drawn release of 300 instances, seed 0."""
    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("scenes") / "release", instances=300))


@pytest.fixture(scope="module")
def photo_release(tmp_path_factory) -> Path:
    # 40 instances of seed 0 hold every look of `synth_images.LOOKS`.
    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("photo") / "release", instances=40, images="photo"))


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = synthesize(SynthConfig(out=tmp_path / "a", instances=60, seed=1))
    b = synthesize(SynthConfig(out=tmp_path / "b", instances=60, seed=1))
    c = synthesize(SynthConfig(out=tmp_path / "c", instances=60, seed=2))
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"
    assert tree_digest(a, skip=("m3el-hf-synth.json",)) == DRAWN_DIGEST


@pytest.mark.slow
def test_photo_releases_are_byte_identical(photo_release, tmp_path):
    again = synthesize(SynthConfig(out=tmp_path / "again", instances=40, images="photo"))
    assert tree_digest(again) == tree_digest(photo_release)
    marker = json.loads((again / "m3el-hf-synth.json").read_text())
    assert (marker["images"], marker["image_size"], marker["mention_copies"]) == ("photo", 32, 0.1)


def test_photo_files_have_commons_sizes_and_formats(photo_release):
    looks, sizes = Counter(), []
    for path in (p for p in photo_release.rglob("*") if p.suffix.lower() in (".jpg", ".png")):
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112)
            looks[image.format, image.mode, bool(image.info.get("progressive")), orientation] += 1
            assert image.format == ("PNG" if path.suffix == ".png" else "JPEG")
            sizes.append(ImageOps.exif_transpose(image).size if orientation else image.size)
    assert set(looks) == {
        ("JPEG", "RGB", False, None),
        ("JPEG", "RGB", True, None),
        ("JPEG", "RGB", False, 3),
        ("JPEG", "RGB", False, 6),
        ("JPEG", "RGB", False, 8),
        ("JPEG", "L", False, None),
        ("JPEG", "CMYK", False, None),
        ("PNG", "RGBA", False, None),
        ("PNG", "I;16", False, None),
    }
    assert looks["JPEG", "RGB", False, None] > 0.5 * sum(looks.values())
    longer, ratios = np.array([max(size) for size in sizes]), np.array([w / h for w, h in sizes])
    assert longer.min() >= 300 and longer.max() <= 3000 and 600 <= np.median(longer) <= 1300
    assert (ratios < 0.95).any() and (ratios > 1.9).any() and (np.abs(ratios - 1) < 0.01).any()


@pytest.mark.parametrize("which", ["scenes", "photo_release"])
def test_pictures_do_not_give_the_gold_away_by_pixels(which, request):
    """Apart from copies, the mention's picture is another picture of the gold, not a near-duplicate of it."""
    root = request.getfixturevalue(which)
    nearest, chance = pixel_nearest_share(root)
    assert nearest <= chance + 0.10
    copies, others = leak_kinds(root)
    assert set(copies) == {"copy"} and copies["copy"] > 0
    assert others["none"] >= 0.95 * sum(others.values())


@pytest.mark.parametrize("which", ["scenes", "photo_release"])
def test_pictures_carry_the_attribute_colour(which, request):
    """Every picture of an entity shows its attribute's colour: its own picture and its mention's alike."""
    root, own, others, modes = request.getfixturevalue(which), [], [], Counter()
    for topic, record, mention, files, _ in instances(root):
        attributes = [attribute for attribute, _ in _VOCAB[topic][1]]
        pictures = [(c["description"], f) for c, f in zip(record["candidates"], files, strict=True) if f]
        if not is_copy(record):
            pictures.append((record["description"], mention))
        for description, path in pictures:
            attribute = next(i for i, a in enumerate(attributes) if description.startswith(a + " "))
            shares, mode = colour_shares(path)
            assert shares[attribute] >= 0.03, path
            modes[mode] += 1
            if mode not in ("L", "I;16"):  # in colour, the attribute's colour stands out from the others
                own.append(shares[attribute])
                others.append(np.delete(shares, attribute).mean())
    assert len(own) > 100 and np.mean(own) > 4 * np.mean(others)
    assert set(modes) == ({"RGB", "L", "CMYK", "RGBA", "I;16"} if which == "photo_release" else {"RGB"})


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


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_mention_copies_sets_the_share_of_copies(tmp_path, share):
    root = synthesize(SynthConfig(out=tmp_path / "r", instances=150, mention_copies=share))
    with_gold_image = [r for t in TOPICS for r in load_records(root, t) if gold_image(r)]
    copies = sum(map(is_copy, with_gold_image))
    assert abs(copies / len(with_gold_image) - min(share, 0.97)) < 0.08  # 3% of mention images are missing
    copied, others = leak_kinds(root)
    assert copied.total() == copies and set(copied) <= {"copy"} and others["none"] >= 0.95 * others.total()
    assert json.loads((root / "m3el-hf-synth.json").read_text())["mention_copies"] == share


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


def test_image_size_option_is_for_drawn_images(tmp_path):
    root = synthesize(SynthConfig(out=tmp_path / "r", instances=3, topics=("common",), image_size=20))
    with Image.open(io.BytesIO(next(root.rglob("*.jpg")).read_bytes())) as image:
        assert image.size == (20, 20)
    assert SynthConfig(out=tmp_path, images="photo").image_size == 32  # the default is accepted, and unused


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
        ({"format": "csv"}, r"`format` must be one of json, jsonl, python, mimic, got 'csv'"),
        ({"mention_copies": 1.5}, r"`mention_copies` must be a number between 0 and 1, got 1.5"),
        ({"mention_copies": -0.1}, r"`mention_copies` must be a number between 0 and 1, got -0.1"),
        ({"mention_copies": True}, r"`mention_copies` must be a number between 0 and 1, got True"),
        ({"images": "svg"}, r"`images` must be one of drawn, photo, got 'svg'"),
        (
            {"images": "photo", "image_size": 64},
            r"`image_size` applies to drawn images only: photo images have Commons-like sizes",
        ),
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
    args = parser.parse_args(["--out", str(tmp_path), "--images", "photo", "--mention-copies", "0.25"])
    config = dataclass_from_namespace(SynthConfig, args)
    assert (config.images, config.mention_copies) == ("photo", 0.25)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(tmp_path), "--images", "png"])
