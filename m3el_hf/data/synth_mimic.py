"""``m3el-hf synth --format mimic``: a small synthetic release in MIMIC's layout (WikiMEL, RichpediaMEL, WikiDiverse).

The entities, sentences and pictures are synth's own (`m3el_hf.data.synth`); only the files differ.
MIMIC (github pengfei-luo/MIMIC, ``codes/utils/dataset.py``) reads::

    {NAME}_train.json, {NAME}_dev.json, {NAME}_test.json   JSON lists of mentions: id, mentions (URL-quoted),
                                                          sentence, imgPath ("" for none), answer (Qid or "nil")
    kb_entity.json     JSON list of entities: id (int), type "entity", entity_name (URL-quoted), attr, image_list
    qid2id.json        one JSON line: Qid -> the id of its kb_entity.json row
    kb_image/          the files that image_list names
    mention_image/     a mention's imgPath, as ``<stem>.jpg`` (MIMIC converted every mention image to JPEG)

Like the released files, some answers are ``nil`` (no entity: MIMIC drops them), some mentions have no image
(empty ``imgPath``), and ``imgPath`` keeps the original file's name, often ``.png``, while the file is a JPEG.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from .synth import SynthConfig, entity_images, make_entities, make_sentence
from .synth_images import draw, encode

__all__ = ["P_NIL", "write_mimic_release"]

P_NIL = 0.05
"""Share of synthetic mentions whose answer is ``nil``."""

_P_NO_IMAGE = 0.1


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _kb(entities: list[Any], config: SynthConfig, root: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`kb_entity.json`'s rows and `qid2id`; writes each entity's picture into ``kb_image/``."""
    image = entity_images(config, root)
    rows, qid2id = [], {}
    for row_id, entity in enumerate(entities):
        files = []
        if entity.file:
            files = [f"{entity.qid}.{entity.file.rpartition('.')[2]}"]
            (root / "kb_image" / files[0]).write_bytes(image(entity, f"kb_image/{files[0]}"))
        qid2id[entity.qid] = row_id
        row = {"id": row_id, "type": "entity", "entity_name": _quote(entity.name), "attr": entity.description}
        rows.append({**row, "image_list": files})
    return rows, qid2id


def _mention(i: int, gold: Any, topic: str, config: SynthConfig, rngs: tuple[random.Random, Any]) -> dict[str, Any]:
    """One mention record; its picture, if any, is written by the caller from ``record.pop("_image")``."""
    rng, image_rng = rngs
    record: dict[str, Any] = {"id": str(i), "mentions": _quote(gold.name)}
    record["sentence"] = make_sentence(topic, gold, rng).strip()
    record["imgPath"] = ""
    if rng.random() >= _P_NO_IMAGE:
        ext = rng.choice(("png", "jpg", "jpeg"))
        record["imgPath"] = f"{config.name}/images/{i}_{gold.qid}.{ext}"
        record["_image"] = encode(draw(gold, config.image_size, image_rng, mention=True), "jpg")
    record["answer"] = "nil" if rng.random() < P_NIL else gold.qid
    return record


def write_mimic_release(config: SynthConfig, root: Path, counts: list[int], progress: Any) -> tuple[int, int]:
    """Write a MIMIC-format release of `config.name` under `root`: the topics' entities form one knowledge base.

    Returns (KB entities, image files).
    """
    for folder in ("kb_image", "mention_image"):
        (root / folder).mkdir()
    mentions, entities = [], []
    for topic, count in zip(config.topics, counts, strict=True):
        topic_entities = make_entities(topic, count, config.seed, photos=False)
        rng = random.Random(f"m3el-synth/mimic/{config.seed}/{topic}")
        image_rng = np.random.default_rng([config.seed, len(entities)])
        for index in rng.sample(range(len(topic_entities)), count):
            record = _mention(len(mentions), topic_entities[index], topic, config, (rng, image_rng))
            if "_image" in record:
                stem = record["imgPath"].rpartition("/")[2].partition(".")[0]
                (root / "mention_image" / f"{stem}.jpg").write_bytes(record.pop("_image"))
            mentions.append(record)
            progress.update()
        entities += topic_entities
    rows, qid2id = _kb(entities, config, root)
    (root / "kb_entity.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (root / "qid2id.json").write_text(json.dumps(qid2id) + "\n", encoding="utf-8")
    order = random.Random(f"m3el-synth/mimic-splits/{config.seed}").sample(mentions, len(mentions))
    bounds = {"train": (0, round(0.8 * len(order))), "dev": (round(0.8 * len(order)), round(0.9 * len(order)))}
    bounds["test"] = (bounds["dev"][1], len(order))
    for suffix, (start, stop) in bounds.items():
        text = json.dumps(order[start:stop], ensure_ascii=False, indent=1) + "\n"
        (root / f"{config.name.upper()}_{suffix}.json").write_text(text, encoding="utf-8")
    images = sum(1 for _ in (root / "kb_image").iterdir()) + sum(1 for _ in (root / "mention_image").iterdir())
    return len(rows), images
