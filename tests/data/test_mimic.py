"""MIMIC-format releases (WikiMEL, RichpediaMEL, WikiDiverse): ``synth`` and ``prepare`` with ``--format mimic``."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import PIL.Image
import pytest

from m3el_hf.data.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def mimic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mimic") / "raw"
    return synthesize(SynthConfig(out=out, instances=200, seed=0, format="mimic", name="wikimel"))


def _mentions(root: Path) -> list[dict]:
    return [m for split in ("train", "dev", "test") for m in json.loads((root / f"WIKIMEL_{split}.json").read_text())]


def test_synth_mimic_is_read_as_mimic_reads_it(mimic_raw):
    qid2id = json.loads((mimic_raw / "qid2id.json").read_text().splitlines()[0])
    kb = {row["id"]: row for row in json.loads((mimic_raw / "kb_entity.json").read_text())}
    mentions = _mentions(mimic_raw)
    assert len(mentions) == 200 and len({m["id"] for m in mentions}) == 200
    assert sorted(qid2id.values()) == sorted(kb) == list(range(len(kb)))
    nil = [m for m in mentions if m["answer"] == "nil"]
    assert 0 < len(nil) < 30
    for mention in mentions:
        assert set(mention) == {"id", "mentions", "sentence", "imgPath", "answer"}
        if mention["answer"] != "nil":
            # The gold's KB row (through qid2id) has the mention's surface form as its name, both URL-quoted.
            row = kb[qid2id[mention["answer"]]]
            assert row["type"] == "entity" and row["entity_name"] == mention["mentions"]
        if mention["imgPath"]:  # MIMIC: img_name.split('/')[-1].split('.')[0] + '.jpg' under mention_image/
            file = mimic_raw / "mention_image" / (mention["imgPath"].split("/")[-1].split(".")[0] + ".jpg")
            assert PIL.Image.open(file).format == "JPEG"
    assert any(" " in urllib.parse.unquote(m["mentions"]) and "%20" in m["mentions"] for m in mentions)
    assert any(m["imgPath"] == "" for m in mentions) and any(m["imgPath"].endswith(".png") for m in mentions)
    for row in kb.values():
        assert all((mimic_raw / "kb_image" / name).is_file() for name in row["image_list"])
    assert sum(not row["image_list"] for row in kb.values()) > 0


def test_synth_mimic_is_deterministic(mimic_raw, tmp_path):
    again = synthesize(SynthConfig(out=tmp_path / "again", instances=200, seed=0, format="mimic", name="wikimel"))
    files = sorted(p.relative_to(mimic_raw) for p in mimic_raw.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((mimic_raw / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_synth_mimic_refuses_photos_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="--format mimic takes drawn images"):
        SynthConfig(out=tmp_path, format="mimic", images="photo")
    with pytest.raises(ValueError, match="name='Wiki MEL'"):
        SynthConfig(out=tmp_path, format="mimic", name="Wiki MEL")


def test_mimic_prepare_has_one_topic_its_name(mimic_raw, tmp_path):
    from m3el_hf.data.prepare import PrepareConfig

    assert PrepareConfig(raw=mimic_raw, out=tmp_path, format="mimic", name="wikimel").topics == ("wikimel",)
    for name in ("movies", "all"):
        with pytest.raises(ValueError, match=rf"^--name {name} would pass for M³EL's own config: name the dataset"):
            PrepareConfig(raw=mimic_raw, out=tmp_path, format="mimic", name=name)
    for wrong in ({"topics": ("movies",)}, {"records": ("movies=movies.json",)}):
        with pytest.raises(
            ValueError, match=r"^--topics and --records are for M³EL releases; .* is --name \(wikimel\)"
        ):
            PrepareConfig(raw=mimic_raw, out=tmp_path, format="mimic", name="wikimel", **wrong)


@pytest.fixture(scope="module")
def mimic_prepared(mimic_raw, tmp_path_factory) -> Path:
    from m3el_hf.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("mimic-hub") / "wikimel"
    return prepare(PrepareConfig(raw=mimic_raw, out=out, format="mimic", name="wikimel")).out


def test_prepared_mimic_loads_with_stock_datasets(mimic_raw, mimic_prepared):
    import datasets

    qid2id = json.loads((mimic_raw / "qid2id.json").read_text())
    kb_rows = json.loads((mimic_raw / "kb_entity.json").read_text())
    kb = datasets.load_dataset(str(mimic_prepared), "wikimel-kb", split="kb")
    id2qid = {v: k for k, v in qid2id.items()}
    assert kb["qid"] == [id2qid[row["id"]] for row in kb_rows]
    assert kb["name"] == [urllib.parse.unquote(row["entity_name"]) for row in kb_rows]
    assert [image is not None for image in kb["image"]] == [bool(row["image_list"]) for row in kb_rows]
    expected = {"train": "train", "validation": "dev", "test": "test"}
    for split, suffix in expected.items():
        raw = [m for m in json.loads((mimic_raw / f"WIKIMEL_{suffix}.json").read_text()) if m["answer"] != "nil"]
        rows = datasets.load_dataset(str(mimic_prepared), "wikimel", split=split)
        assert rows["id"] == [f"wikimel-{m['id']}" for m in raw]
        assert rows["gold_qid"] == [m["answer"] for m in raw]
        assert rows["mention"] == [urllib.parse.unquote(m["mentions"]) for m in raw]
        assert [r["candidates"][0]["qid"] for r in rows] == rows["gold_qid"] and set(rows["label"]) == {0}
        assert [r is not None for r in rows["mention_image"]] == [bool(m["imgPath"]) for m in raw]
    report = json.loads((mimic_prepared / "prepare_report.json").read_text())
    nil = sum(m["answer"] == "nil" for m in _mentions(mimic_raw))
    assert report["skipped"]["records_skipped"] == {"nil_answer": nil}
    assert report["audit"]["wikimel"]["kb_entities"] == len(kb_rows) and report["options"]["topics"] == ["wikimel"]
    card = (mimic_prepared / "README.md").read_text()
    assert f"Dropped: {nil} mentions whose answer is `nil`, 0" in card and "luo2023multi" in card


def _copy_with(raw: Path, dest: Path, edit) -> Path:
    import shutil

    shutil.copytree(raw, dest)
    edit(dest)
    return dest


def _break(root: Path) -> None:
    test = json.loads((root / "WIKIMEL_test.json").read_text())
    with_image = next(m for m in test if m["imgPath"] and m["answer"] != "nil")
    (root / "mention_image" / (with_image["imgPath"].split("/")[-1].split(".")[0] + ".jpg")).unlink()
    next(m for m in test if m["answer"] != "nil" and m is not with_image)["answer"] = "Q1"
    (root / "WIKIMEL_test.json").write_text(json.dumps(test))


def test_prepare_mimic_raises_or_counts_what_it_drops(mimic_raw, tmp_path):
    from m3el_hf.data.prepare import PrepareConfig, prepare

    broken = _copy_with(mimic_raw, tmp_path / "broken", _break)
    with pytest.raises(ValueError, match=r"WIKIMEL_test.json, record \d+: answer 'Q1' is not in the knowledge base"):
        prepare(PrepareConfig(raw=broken, out=tmp_path / "out", format="mimic", name="wikimel"))
    assert not (tmp_path / "out").exists()
    result = prepare(PrepareConfig(raw=broken, out=tmp_path / "out", format="mimic", name="wikimel", on_error="skip"))
    nil = sum(m["answer"] == "nil" for m in _mentions(mimic_raw))
    assert result.report.records_skipped == {"nil_answer": nil, "answer_not_in_kb": 1}
    assert result.report.images_skipped == {"missing_image": 1}
    assert f"Dropped: {nil} mentions whose answer is `nil`, 1" in (result.out / "README.md").read_text()


def test_real_records_from_the_melbench_readme_round_trip(tmp_path):
    """Sentences, mentions and entity names verbatim from MELBench's README (Wikidata-MEL and Richpedia-MEL
    samples), in MIMIC's files; the README gives no Qids or descriptions, so those are placeholders."""
    import datasets

    from m3el_hf.data.prepare import PrepareConfig, prepare

    root = tmp_path / "raw"
    root.mkdir()
    names = ["Charles L. Smith (Seattle politician)", "Will Rogers", "George Washington"]
    kb = [
        {"id": i, "type": "entity", "entity_name": urllib.parse.quote(n), "attr": "", "image_list": []}
        for i, n in enumerate(names)
    ]
    (root / "kb_entity.json").write_text(json.dumps(kb))
    (root / "qid2id.json").write_text(json.dumps({"Q10": 0, "Q11": 1, "Q12": 2}) + "\n")
    seattle = "Seattle Mayor Charles L. Smith (left) with Will Rogers, circa 1935."
    mentions = [
        {
            "id": "1",
            "mentions": urllib.parse.quote("Charles L. Smith"),
            "sentence": seattle,
            "imgPath": "",
            "answer": "Q10",
        },
        {"id": "2", "mentions": "Will%20Rogers", "sentence": seattle, "imgPath": "", "answer": "Q11"},
    ]
    washington = "Washington resigned his commission after the Treaty of Paris in 1783."
    test = [{"id": "3", "mentions": "Washington", "sentence": washington, "imgPath": "", "answer": "Q12"}]
    for suffix, records in (("train", mentions), ("dev", []), ("test", test)):
        (root / f"richpediamel_{suffix}.json").write_text(json.dumps(records))
    out = prepare(PrepareConfig(raw=root, out=tmp_path / "out", format="mimic", name="richpediamel")).out
    train = datasets.load_dataset(str(out), "richpediamel", split="train")
    assert train["mention"] == ["Charles L. Smith", "Will Rogers"] and train["sentence"] == [seattle, seattle]
    assert [r["candidates"][0]["name"] for r in train] == names[:2] and train["tasks"] == [["T-T"], ["T-T"]]
    assert datasets.load_dataset(str(out), "richpediamel", split="test")["gold_qid"] == ["Q12"]
    assert datasets.load_dataset(str(out), "richpediamel-kb", split="kb")["name"] == names


def test_evaluate_kb_on_mimic_equals_ranking_through_the_entity_index(mimic_prepared, tiny_clip_path, tmp_path):
    """`m3el-hf evaluate --protocol kb` on prepared MIMIC data; its T-T ranks, recomputed through an `EntityIndex`
    of the ``wikimel-kb`` config and the linker, give the same MR and MRR."""
    import datasets

    from m3el_hf.cli import main
    from m3el_hf.linking import EntityIndex, EntityLinker, Mention

    output = tmp_path / "results.json"
    args = ["evaluate", "--model", str(tiny_clip_path), "--data", str(mimic_prepared), "--output", str(output)]
    assert main([*args, "--protocol", "kb", "--tasks", "T-T", "TI-TI", "-q"]) == 0
    records = {r["task"]: r for r in json.loads(output.read_text())["records"] if r["topic"] == "wikimel"}
    test = datasets.load_dataset(str(mimic_prepared), "wikimel", split="test")
    assert set(records) == {"T-T", "TI-TI"} and records["T-T"]["evaluated"] == test.num_rows
    kb = datasets.load_dataset(str(mimic_prepared), "wikimel-kb", split="kb")
    linker = EntityLinker.from_pretrained(tiny_clip_path, device="cpu")
    index = EntityIndex.build(linker, kb, modality="T", progress=False)
    assert len(index) == kb.num_rows
    found = linker.link_batch([Mention(r["mention"], r["sentence"]) for r in test], index=index, top_k=kb.num_rows)
    ranks = [
        next(e.rank for e in entities if e.qid == row["gold_qid"]) for entities, row in zip(found, test, strict=True)
    ]
    assert records["T-T"]["mr"] == pytest.approx(sum(ranks) / len(ranks))
    assert records["T-T"]["mrr"] == pytest.approx(sum(1 / rank for rank in ranks) / len(ranks))
    assert records["T-T"]["hits@1"] == pytest.approx(ranks.count(1) / len(ranks))


def test_evaluate_refuses_the_candidate_protocol_on_mimic_data(mimic_prepared, tiny_clip_path, tmp_path, capsys):
    from m3el_hf.cli import main

    args = [
        "evaluate",
        "--model",
        str(tiny_clip_path),
        "--data",
        str(mimic_prepared),
        "--output",
        str(tmp_path / "r.json"),
    ]
    assert main([*args, "--protocol", "candidates", "kb"]) == 2
    assert "is a MIMIC-format dataset without candidate lists: use --protocol kb." in capsys.readouterr().err
    # M³EL's MTEB tasks have M³EL's topics as subsets: a dataset of its own is refused there, before any model loads.
    assert main([*args, "--protocol", "kb", "--harness", "mteb"]) == 2
    err = capsys.readouterr().err
    assert f"{mimic_prepared} has the topic(s) wikimel: use --harness builtin." in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("edit", "match", "key"),
    [
        (
            lambda m, kb: m[0].pop("sentence"),
            r"WIKIMEL_train.json, record 0: missing field 'sentence'",
            "missing_field",
        ),
        (
            lambda m, kb: m[1].update(imgPath=None),
            r"WIKIMEL_train.json, record 1: field 'imgPath' has type NoneType",
            "wrong_type",
        ),
        (
            lambda m, kb: m[2].update(id=m[0]["id"]),
            r"WIKIMEL_train.json, record 2: id '\d+' is used twice",
            "duplicate_id",
        ),
        (lambda m, kb: kb[3].update(id=0), r"kb_entity.json, record 3: id 0 is used twice", "duplicate_id"),
        (
            lambda m, kb: kb[4].update(image_list="x.jpg"),
            r"kb_entity.json, record 4: field 'image_list' has type str",
            "wrong_type",
        ),
    ],
)
def test_read_mimic_names_the_bad_record(mimic_raw, tmp_path, edit, match, key):
    from m3el_hf.data.mimic import read_mimic
    from m3el_hf.data.records import SkipReport

    def change(root: Path) -> None:
        train, kb = (json.loads((root / name).read_text()) for name in ("WIKIMEL_train.json", "kb_entity.json"))
        edit(train, kb)
        (root / "WIKIMEL_train.json").write_text(json.dumps(train))
        (root / "kb_entity.json").write_text(json.dumps(kb))

    root = _copy_with(mimic_raw, tmp_path / "raw", change)
    with pytest.raises(ValueError, match=match):
        read_mimic(root, "raise", SkipReport())
    report = SkipReport()
    read_mimic(root, "skip", report)
    assert report.records_skipped[key] == 1  # a skipped KB row also drops the mentions answering it: counted too
