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
