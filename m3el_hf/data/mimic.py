"""``m3el-hf prepare --format mimic``: WikiMEL, RichpediaMEL or WikiDiverse, as MIMIC distributes them, to the Hub.

MIMIC (github pengfei-luo/MIMIC, ``codes/utils/dataset.py``) reads a folder of ``*_train.json``,
``*_dev.json`` and ``*_test.json`` (mentions), ``kb_entity.json`` (the knowledge base), ``qid2id.json`` (one
JSON line: Qid -> ``id`` of a ``kb_entity.json`` row), ``kb_image/`` (the files ``image_list`` names) and
``mention_image/`` (a mention's ``imgPath`` as ``<stem>.jpg``: the name up to its first dot). The layout
written is `m3el_hf.layout`'s with one topic, the dataset's name: its splits train / validation / test
(from train / dev / test) and its ``{name}-kb`` config, every entity of ``kb_entity.json`` in id order, its
``qid`` the Qid that ``qid2id.json`` gives its id (``id:N`` for a row that no Qid points to).

These benchmarks rank the whole knowledge base: a mention has no candidate list. Its row's ``candidates``
holds the gold entity alone (``label`` 0), so that the row carries the gold's name, description and image
as an M³EL row does; score with ``evaluate --protocol kb`` (``candidates`` is refused on this data).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import refuse_used_folder, replace_dir
from ..layout import CARD_NAME, LICENSE_NAME, REPORT_NAME, instance_path, kb_path, shard_name
from .audit import DatasetAudit
from .dataset_card import dataset_sizes, license_text, render_dataset_card
from .features import INSTANCE_FEATURES, KB_FEATURES, KB_SPLIT
from .format_errors import M3ELFormatError
from .instances import ImageReader, usable_tasks
from .records import OnError, RawImage, SkipReport
from .synth import SYNTH_MARKER

if TYPE_CHECKING:
    from .prepare import PrepareConfig, PrepareResult

__all__ = ["MIMIC_CITATIONS", "MimicRelease", "prepare_mimic", "read_mimic", "write_mimic"]

MIMIC_SPLITS: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}
"""MIMIC's split file suffixes and the split each becomes."""

MIMIC_CITATIONS = """@inproceedings{luo2023multi,
  title     = {Multi-Grained Multimodal Interaction Network for Entity Linking},
  author    = {Luo, Pengfei and Xu, Tong and Wu, Shiwei and Zhu, Chen and Xu, Linli and Chen, Enhong},
  booktitle = {Proceedings of the 29th ACM SIGKDD Conference on Knowledge Discovery and Data Mining},
  year      = {2023}
}"""
"""MIMIC, whose cleaned copies of WikiMEL and RichpediaMEL (MELBench) and WikiDiverse this format is."""

_MENTION_FIELDS = {"id": (str, int), "mentions": str, "sentence": str, "imgPath": str, "answer": str}
_ENTITY_FIELDS = {"id": int, "entity_name": str, "attr": str, "image_list": list}
_BATCH_ROWS = 500


@dataclass
class MimicRelease:
    """The parsed JSON of a MIMIC-format folder: mentions by split, KB rows by id, and each row's Qid."""

    root: Path
    mentions: dict[str, list[tuple[int, dict[str, Any]]]]
    entities: dict[int, dict[str, Any]]
    qids: dict[int, str]
    qid2id: dict[str, int]


def _load(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a MIMIC-format folder holds kb_entity.json and qid2id.json.")
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text.splitlines()[0] if path.name == "qid2id.json" else text)
    except (UnicodeDecodeError, json.JSONDecodeError, IndexError) as error:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({error}).") from None


def _split_file(root: Path, suffix: str) -> Path:
    found = sorted(root.glob(f"*_{suffix}.json"))
    if len(found) != 1:
        names = [p.name for p in found] or "none"
        raise FileNotFoundError(f"{root}: expected one *_{suffix}.json file (e.g. WIKIMEL_{suffix}.json), got {names}.")
    return found[0]


def _check(record: Any, fields: dict[str, Any], source: Path, index: int) -> None:
    if not isinstance(record, dict):
        raise M3ELFormatError(f"expected a JSON object, got {type(record).__name__}", source, index, key="wrong_type")
    for name, kind in fields.items():
        if name not in record:
            raise M3ELFormatError(f"missing field {name!r}", source, index, key="missing_field")
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            got = type(record[name]).__name__
            raise M3ELFormatError(f"field {name!r} has type {got}", source, index, key="wrong_type")


def _check_once(record: dict[str, Any], seen: set, source: Path, index: int) -> None:
    if record["id"] in seen:
        raise M3ELFormatError(f"id {record['id']!r} is used twice", source, index, key="duplicate_id")
    seen.add(record["id"])


def read_mimic(root: Path, on_error: OnError, report: SkipReport) -> MimicRelease:
    """Read and validate a MIMIC-format folder; bad records raise, or are skipped and counted in `report`.

    A mention whose answer is ``nil`` (no entity) is always dropped, as MIMIC drops it, and counted as
    ``nil_answer``; an answer that ``qid2id.json`` or ``kb_entity.json`` lacks is an error (``answer_not_in_kb``).
    """

    def keep(check: Any, source: Path, index: int, record: Any) -> bool:
        try:
            check(record, source, index)
        except M3ELFormatError as error:
            if on_error == "raise" and error.key != "nil_answer":
                raise
            report.add("record", error)
            return False
        return True

    kb_file, qid_file = root / "kb_entity.json", root / "qid2id.json"
    rows, qid2id = _load(kb_file), _load(qid_file)
    if not isinstance(rows, list) or not isinstance(qid2id, dict):
        raise ValueError(f"{root}: kb_entity.json must hold a JSON list and qid2id.json a JSON object.")
    entity_ids, mention_ids = set(), set()

    def check_entity(record: Any, source: Path, index: int) -> None:
        _check(record, _ENTITY_FIELDS, source, index)
        _check_once(record, entity_ids, source, index)

    entities = {row["id"]: row for i, row in enumerate(rows) if keep(check_entity, kb_file, i, row)}
    qids = {row_id: qid for qid, row_id in qid2id.items() if isinstance(row_id, int) and row_id in entities}

    def check_mention(record: Any, source: Path, index: int) -> None:
        _check(record, _MENTION_FIELDS, source, index)
        _check_once(record, mention_ids, source, index)
        if record["answer"] == "nil":
            raise M3ELFormatError(
                "answer is nil (no entity): dropped, as MIMIC drops it", source, index, key="nil_answer"
            )
        if qid2id.get(record["answer"]) not in entities:
            where = "qid2id.json" if record["answer"] not in qid2id else "kb_entity.json"
            message = f"answer {record['answer']!r} is not in the knowledge base ({where} lacks it)"
            raise M3ELFormatError(message, source, index, key="answer_not_in_kb")

    mentions = {}
    for suffix, split in MIMIC_SPLITS.items():
        path = _split_file(root, suffix)
        records = _load(path)
        if not isinstance(records, list):
            raise ValueError(f"{path} must hold a JSON list of mentions, got {type(records).__name__}.")
        mentions[split] = [(i, r) for i, r in enumerate(records) if keep(check_mention, path, i, r)]
    return MimicRelease(root, mentions, entities, qids, qid2id)


class _Images:
    """Reads pictures through `ImageReader` (its checks and resizing); a missing or bad one raises or is counted."""

    def __init__(self, reader: ImageReader, on_error: OnError, report: SkipReport):
        self.reader, self.on_error, self.report = reader, on_error, report

    def read(self, local: str, name: str, source: str, index: int) -> tuple[dict | None, dict | None]:
        """The Image value and the source of `local` (release-relative), or (None, None)."""
        try:
            stored = self.reader.read(RawImage(file=name, url="", local=local), source, index)
        except M3ELFormatError as error:
            if self.on_error == "raise":
                raise
            self.report.add("image", error)
            return None, None
        return {"bytes": stored.data, "path": None}, {"file": name, "url": ""}


def _kb_rows(
    release: MimicRelease, topic: str, images: _Images, golds: dict[int, dict[str, Any] | None]
) -> Iterator[dict[str, Any]]:
    """One KB row per entity, in id order; the row of each id in `golds` is also stored there, for the mentions."""
    for row_id in sorted(release.entities):
        entity = release.entities[row_id]
        image, source = None, None
        if entity["image_list"]:
            name = str(entity["image_list"][0])
            image, source = images.read(f"kb_image/{name}", name, "kb_entity.json", row_id)
        row = {
            "topic": topic,
            "qid": release.qids.get(row_id, f"id:{row_id}"),
            "name": urllib.parse.unquote(entity["entity_name"]),
            "description": entity["attr"],
            "image": image,
            "image_source": source,
        }
        if row_id in golds:
            golds[row_id] = row
        yield row


def _mention_rows(
    release: MimicRelease, topic: str, split: str, golds: dict[int, Any], images: _Images, audit: DatasetAudit
) -> Iterator[dict[str, Any]]:
    source = _split_file(release.root, next(s for s, name in MIMIC_SPLITS.items() if name == split)).name
    for index, record in release.mentions[split]:
        gold = golds[release.qid2id[record["answer"]]]
        image, image_source = None, None
        if record["imgPath"]:
            stem = record["imgPath"].split("/")[-1].split(".")[0]  # MIMIC's own mapping to its JPEG files
            image, image_source = images.read(f"mention_image/{stem}.jpg", record["imgPath"], source, index)
        tasks = usable_tasks(image is not None, gold["image"] is not None)
        audit.topic(topic).observe(
            split,
            num_candidates=1,
            label=0,
            tasks=tasks,
            mention_image_missing=image is None,
            candidate_images_missing=gold["image"] is None,
            mention_image_is_gold_image=False,
            duplicate=False,
        )
        yield {
            "id": f"{topic}-{record['id']}",
            "topic": topic,
            "mention": urllib.parse.unquote(record["mentions"]),
            "sentence": record["sentence"],
            "mention_image": image,
            "mention_image_source": image_source,
            "mention_image_leak": None,
            "mention_image_near_candidates": [],
            "candidates": [{key: gold[key] for key in ("qid", "name", "description")}],
            "candidate_images": [gold["image"]],
            "candidate_image_sources": [gold["image_source"]],
            "label": 0,
            "gold_qid": gold["qid"],
            "tasks": tasks,
            "extra": json.dumps({"mimic_file": source}),
        }


def _write_parquet(rows: Iterable[dict[str, Any]], schema: pa.Schema, path: Path) -> int:
    """Write `rows` to one Parquet file in batches; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, batch = 0, []
    with pq.ParquetWriter(path, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == _BATCH_ROWS:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch or not count:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return count + len(batch)


def write_mimic(
    release: MimicRelease, topic: str, staging: Path, images: ImageReader, on_error: OnError, report: SkipReport
) -> DatasetAudit:
    """Write the release's KB and mention shards under `staging` in the Hub layout; return their audit."""
    audit = DatasetAudit()
    reader = _Images(images, on_error, report)
    golds = dict.fromkeys(release.qid2id[r["answer"]] for split in release.mentions.values() for _, r in split)
    kb_file = staging / Path(kb_path(topic, KB_SPLIT)).parent / shard_name(KB_SPLIT, 0, 1)
    kb_rows = _kb_rows(release, topic, reader, golds)
    audit.topic(topic).kb_entities = _write_parquet(kb_rows, KB_FEATURES.arrow_schema, kb_file)
    for split in MIMIC_SPLITS.values():
        if not release.mentions[split]:
            continue
        path = staging / Path(instance_path(topic, split)).parent / shard_name(split, 0, 1)
        _write_parquet(_mention_rows(release, topic, split, golds, reader, audit), INSTANCE_FEATURES.arrow_schema, path)
    return audit


def _card_section(name: str, report: SkipReport, audit: DatasetAudit) -> str:
    """What this folder is, whom to cite and what was dropped: read before the M³EL card's own sections."""
    skipped = {**report.records_skipped, **report.images_skipped}
    named = ("nil_answer", "answer_not_in_kb", "missing_image")
    total = audit.total()
    return f"""
## Source: {name}, in MIMIC's format

This folder holds **{name}**, converted by `m3el-hf prepare --format mimic` from the files that MIMIC
(github pengfei-luo/MIMIC) distributes for WikiMEL and RichpediaMEL (MELBench, github seukgcode/MELBench) and
WikiDiverse (github wangxw5/wikiDiverse); its texts and images are under those datasets' terms. Cite the
original dataset and MIMIC; the M³EL sections below describe the layout, not this data. Topic: `{name}`;
{total.instances} mentions ({", ".join(f"{s} {n}" for s, n in total.splits.items())}), {total.kb_entities}
knowledge-base entities (`{name}-kb`). The splits are the release's files (dev becomes `validation`), not
the hash split described below.

A mention has no candidate list: `candidates` holds its gold entity alone. Rank the whole knowledge base
(`m3el-hf evaluate --protocol kb`); the candidate protocol is meaningless here and refused.

Dropped: {skipped.get("nil_answer", 0)} mentions whose answer is `nil`, {skipped.get("answer_not_in_kb", 0)}
mentions whose answer is not in the knowledge base, {skipped.get("missing_image", 0)} missing images (the row
keeps no image), and {report.total - sum(skipped.get(key, 0) for key in named)}
other skipped records or images (`prepare_report.json` counts each).

```bibtex
{MIMIC_CITATIONS}
```
"""


def prepare_mimic(config: PrepareConfig) -> PrepareResult:
    """`prepare` for a MIMIC-format folder: one topic, `config.name`, and its knowledge base."""
    from .prepare import PrepareResult, _synth_marker, _write_report

    name, report = config.name, SkipReport()
    release = read_mimic(config.raw, config.on_error, report)
    out = config.out.resolve()
    refuse_used_folder(out, config.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        reader = ImageReader(
            config.raw, max_image_side=config.max_image_side, image_size=config.image_size, max_pixels=config.max_pixels
        )
        audit = write_mimic(release, name, staging, reader, config.on_error, report)
        synthetic = _synth_marker(config.raw)
        options = asdict(config)
        card = render_dataset_card(
            audit,
            report,
            (name,),
            synthetic=synthetic is not None,
            sizes=dataset_sizes(staging, (name,)),
            options=options,
        )
        head, _, body = card.partition("\n---\n")
        card = f"{head}\n---\n{_card_section(name, report, audit)}{body}"
        (staging / CARD_NAME).write_text(card, encoding="utf-8", newline="")
        license = license_text(True) if synthetic else _LICENSE.format(name=name)
        (staging / LICENSE_NAME).write_text(license, encoding="utf-8")
        files = {name: sorted(p.name for p in config.raw.glob("*.json") if p.name != SYNTH_MARKER)}
        _write_report(staging / REPORT_NAME, config, audit, report, synthetic, files)
        replace_dir(staging, out, config.overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PrepareResult(out=out, audit=audit, report=report)


_LICENSE = """# Licence and terms of this {name} folder

The mentions, sentences, entity texts and images are those of the original dataset (WikiMEL and
RichpediaMEL: MELBench; WikiDiverse), as MIMIC redistributes them, under their authors' terms: read them
before redistributing this folder. It was converted with m3el-hf (Apache-2.0), which adds no terms of its own.
"""
