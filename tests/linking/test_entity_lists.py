"""A knowledge base from a plain list of entities (CSV, JSON lines) through index build and link, every modality
pair on the command line, and an entity listed twice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import PIL.Image
import pytest
from photos import encoded

from m3el_hf.cli import main
from m3el_hf.linking import EntityIndex, EntityLinker, Mention
from m3el_hf.linking.entities import read_entity_list

_COLOURS = {"Q1": (220, 20, 20), "Q2": (20, 200, 30), "Q3": (30, 40, 210), "Q4": (240, 220, 10)}
_NAMES = {"Q1": "Red Planet", "Q2": "Green Park", "Q3": "Blue Lake", "Q4": "Sun City"}


def _write_list(folder: Path, rows: list[dict], suffix: str) -> Path:
    path = folder / f"entities{suffix}"
    with path.open("w", newline="") as file:
        if suffix == ".jsonl":
            file.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(file, fieldnames=["qid", "name", "description", "image"])
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def entity_list(tmp_path_factory) -> Path:
    """A CSV list of four entities, three with a picture in pictures/ (the fourth has none)."""
    folder = tmp_path_factory.mktemp("entity-list")
    (folder / "pictures").mkdir()
    rows = []
    for qid, colour in _COLOURS.items():
        row = {"qid": qid, "name": _NAMES[qid], "description": f"a place coloured {colour}"}
        if qid != "Q4":
            (folder / "pictures" / f"{qid}.png").write_bytes(encoded(PIL.Image.new("RGB", (40, 30), colour), "PNG"))
            row["image"] = f"pictures/{qid}.png"
        rows.append(row)
    (folder / "query.png").write_bytes(encoded(PIL.Image.new("RGB", (40, 30), _COLOURS["Q2"]), "PNG"))
    _write_list(folder, rows, ".jsonl")
    return _write_list(folder, rows, ".csv")


def test_an_index_from_a_plain_list_keeps_its_pictures(entity_list, tiny_clip_path, tmp_path, capsys):
    out = tmp_path / "index"
    build = ["-q", "index", "build", "--model", str(tiny_clip_path), "--out", str(out), "--factory", "Flat"]
    assert main([*build, "--kb", str(entity_list)]) == 0
    assert f"Wrote {out}: 3 entities of {entity_list}, modality TI, 1 left out" in capsys.readouterr().out
    found = EntityIndex.load(out).search(EntityIndex.load(out).embeddings(), top_k=1)
    pictures = {e.qid: e.stored_image["bytes"] for hits in found for e in hits}
    assert pictures == {q: (entity_list.parent / "pictures" / f"{q}.png").read_bytes() for q in ("Q1", "Q2", "Q3")}
    assert all(e.image.size == (40, 30) for hits in found for e in hits)
    same = tmp_path / "from-jsonl"
    assert main([*build, "--kb", str(entity_list.with_suffix(".jsonl")), "--out", str(same)]) == 0
    assert EntityIndex.load(same).rows.to_pylist() == EntityIndex.load(out).rows.to_pylist()
    capsys.readouterr()
    link = ["-q", "link", "--model", str(tiny_clip_path), "--index", str(out), "--json"]
    assert (
        main([*link, "--image", str(entity_list.parent / "query.png"), "--mention-modality", "I", "--modality", "TI"])
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main([*link, "--mention", "Paris", "--modality", "T"]) == 2
    assert "holds entity modality TI embeddings; entity modality T needs an index built with --modality T" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("mention_modality", ["T", "I", "TI"])
def test_link_serves_every_modality_pair(entity_list, tiny_clip_path, capsys, mention_modality):
    linker = EntityLinker.from_pretrained(tiny_clip_path, device="cpu")
    entities = list(read_entity_list(entity_list))
    picture = entity_list.parent / "query.png"
    query = Mention("Green Park", "We walked in Green Park.", picture.read_bytes())
    for entity_modality in ("T", "I", "TI"):
        argv = ["-q", "link", "--model", str(tiny_clip_path), "--kb", str(entity_list), "--json", "--top-k", "4"]
        argv += ["--mention", query.mention, "--sentence", query.sentence, "--image", str(picture)]
        assert main([*argv, "--mention-modality", mention_modality, "--modality", entity_modality]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        expected = linker.link_batch(
            [query], entities, top_k=4, mention_modality=mention_modality, entity_modality=entity_modality
        )[0]
        assert [(p["qid"], p["score"]) for p in printed] == [
            (e.qid, pytest.approx(e.score, abs=1e-6)) for e in expected
        ]


def test_an_entity_listed_twice_is_kept_once_if_the_same_else_refused(entity_list, tmp_path, caplog):
    rows = [json.loads(line) for line in entity_list.with_suffix(".jsonl").read_text().splitlines()]
    for row in rows:
        if "image" in row:
            row["image"] = str(entity_list.parent / row["image"])
    same = _write_list(tmp_path, [*rows, rows[1]], ".jsonl")
    with caplog.at_level("WARNING"):
        assert read_entity_list(same)["qid"] == ["Q1", "Q2", "Q3", "Q4"]
    assert (
        "1 entities listed twice with the same name, description and image (e.g. Q2); each is kept once" in caplog.text
    )
    other = _write_list(tmp_path, [*rows, {**rows[1], "description": "another park"}], ".csv")
    with pytest.raises(
        ValueError, match=r"entity Q2 is listed twice \(line 3 and line 6\) with a different description"
    ):
        read_entity_list(other)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("qid,name\nQ1,Paris\n", r"has no description column; an entity list needs qid, name and description\."),
        ("qid,name,description\n,Paris,a city\n", r", line 2: the entity has no qid\."),
        ("qid,name,description,image\nQ1,Paris,a city,missing.png\n", r", line 2: image missing\.png cannot be read"),
        (
            "qid,name,description,image\nQ1,Paris,a city,entities.csv\n",
            r", line 2: image entities\.csv is not an image",
        ),
        ("qid,name,description\n", r"lists no entity\."),
    ],
)
def test_a_broken_entity_list_is_one_line_naming_the_line(tmp_path, content, message):
    path = tmp_path / "entities.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^{path}{message}" if message.startswith(",") else message):
        read_entity_list(path)


def test_an_index_holds_an_entity_listed_twice_once(entity_list, tiny_clip_path):
    import datasets

    linker = EntityLinker.from_pretrained(tiny_clip_path, device="cpu")
    entities = read_entity_list(entity_list)
    doubled = datasets.concatenate_datasets([entities, entities.select([1])])
    index = EntityIndex.build(linker, doubled, modality="T", progress=False)
    assert len(index) == 4
    found = linker.link("Green Park", index=index, top_k=10)
    assert sorted(e.qid for e in found) == ["Q1", "Q2", "Q3", "Q4"]
