"""The M³EL dataset card: the Hub YAML (configs, dataset_info) and a body with counts and the data audit."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

from datasets import DatasetInfo, Features, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from ..tasks import TASK_NAMES
from ..version import __version__
from .audit import DatasetAudit, TopicAudit
from .features import INSTANCE_FEATURES, KB_FEATURES, KB_SPLIT, SPLITS, task_columns
from .records import SkipReport

__all__ = ["CITATION", "build_dataset_card", "hub_configs", "instance_path", "kb_path", "render_dataset_card"]

CITATION = """@article{m3el2024,
  title   = {M$^3$EL: A Multi-task Multi-topic Dataset for Multi-modal Entity Linking},
  journal = {arXiv preprint arXiv:2410.18096},
  year    = {2024}
}"""


def instance_path(topic: str, split: str) -> str:
    """Glob of a topic's Parquet shards for one split, relative to the dataset root."""
    return f"data/{topic}/{split}-*.parquet"


def kb_path(topic: str) -> str:
    """Glob of a topic's knowledge-base shards, relative to the dataset root."""
    return f"kb/{topic}/{KB_SPLIT}-*.parquet"


def _groups(topics: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    return [(topic, (topic,)) for topic in topics] + [("all", topics)]


def hub_configs(audit: DatasetAudit, topics: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The YAML ``configs``: each topic and ``all``, each of those × the 9 tasks, and ``{name}-kb``.

    Task configs read the same files as their topic and select columns, so nothing is duplicated. A split
    that holds no row in any of a config's topics (a tiny release) is left out, since a split whose data
    files match nothing cannot load.
    """
    configs: dict[str, dict[str, Any]] = {}
    for name, group in _groups(topics):
        data_files = [
            {"split": split, "path": paths}
            for split in SPLITS
            if (paths := [instance_path(t, split) for t in group if audit.topic(t).splits[split]])
        ]
        configs[name] = {"data_files": data_files, **({"default": True} if name == "all" else {})}
        for task in TASK_NAMES:
            # Copies, so that the YAML spells every config out instead of using anchors.
            configs[f"{name}-{task}"] = {"data_files": copy.deepcopy(data_files), "columns": task_columns(task)}
        configs[f"{name}-kb"] = {"data_files": [{"split": KB_SPLIT, "path": [kb_path(t) for t in group]}]}
    return configs


def _infos(audit: DatasetAudit, topics: tuple[str, ...]) -> DatasetInfosDict:
    infos = {}
    for name, group in _groups(topics):
        sizes = {split: sum(audit.topic(t).splits[split] for t in group) for split in SPLITS}
        splits = SplitDict({split: SplitInfo(split, num_examples=n) for split, n in sizes.items() if n})
        infos[name] = DatasetInfo(features=INSTANCE_FEATURES, splits=splits, config_name=name)
        for task in TASK_NAMES:
            features = Features({c: INSTANCE_FEATURES[c] for c in task_columns(task)})
            infos[f"{name}-{task}"] = DatasetInfo(features=features, splits=splits, config_name=f"{name}-{task}")
        kb_size = sum(audit.topic(t).kb_entities for t in group)
        kb_splits = SplitDict({KB_SPLIT: SplitInfo(KB_SPLIT, num_examples=kb_size)})
        infos[f"{name}-kb"] = DatasetInfo(features=KB_FEATURES, splits=kb_splits, config_name=f"{name}-kb")
    return DatasetInfosDict(infos)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else "0"


def _topics_table(audit: DatasetAudit, topics: tuple[str, ...]) -> str:
    rows = ["| topic | instances | " + " | ".join(SPLITS) + " | candidates / instance | KB entities |"]
    rows.append("|---" * (len(SPLITS) + 4) + "|")
    for name, stats in [*((t, audit.topic(t)) for t in topics), ("**all**", audit.total())]:
        splits = " | ".join(str(stats.splits[s]) for s in SPLITS)
        per = stats.candidates / stats.instances if stats.instances else 0
        rows.append(f"| {name} | {stats.instances} | {splits} | {per:.2f} | {stats.kb_entities} |")
    return "\n".join(rows)


def _coverage_table(audit: DatasetAudit, topics: tuple[str, ...]) -> str:
    rows = ["| task | " + " | ".join(topics) + " | all |", "|---" * (len(topics) + 2) + "|"]
    columns = [audit.topic(t) for t in topics] + [audit.total()]
    for task in TASK_NAMES:
        rows.append(f"| {task} | " + " | ".join(_pct(s.task_coverage[task], s.instances) for s in columns) + " |")
    return "\n".join(rows)


def _audit_text(total: TopicAudit, report: SkipReport) -> str:
    positions = total.gold_positions
    top = ", ".join(f"{k}: {_pct(positions[k], total.instances)}" for k in sorted(positions)[:6])
    lines = [
        f"- **Mention image identical to the gold entity's image** (byte for byte): "
        f"{_pct(total.mention_image_is_gold_image, total.instances)} of instances. For these, the I-I task "
        "(and image-side matching in general) is trivially solvable by comparing bytes; report I-I "
        "scores with this in mind.",
        f"- **Gold position in the candidate list** (0 = first): {top}. A system that always picks a "
        "fixed position scores the share of that position.",
        f"- **Missing images**: mention images {_pct(total.mention_images_missing, total.instances)}; "
        f"candidate images {_pct(total.candidate_images_missing, total.candidates)} of candidates.",
        f"- **Exact duplicate instances**: {total.duplicates}.",
    ]
    if report.total:
        records = ", ".join(f"{k}: {v}" for k, v in sorted(report.records_skipped.items())) or "none"
        images = ", ".join(f"{k}: {v}" for k, v in sorted(report.images_skipped.items())) or "none"
        lines.append(
            f"- **Skipped while preparing** (`--on-error skip`, details in `prepare_report.json`): "
            f"records: {records}; images (kept as null): {images}."
        )
    else:
        lines.append("- **Skipped while preparing**: nothing; every record and image was valid.")
    return "\n".join(lines)


def build_dataset_card(
    audit: DatasetAudit,
    report: SkipReport,
    topics: tuple[str, ...],
    *,
    repo_id: str = "m3el",
    synthetic: bool = False,
) -> DatasetCard:
    """The dataset card of `render_dataset_card`, parsed into a `DatasetCard`. Pure: writes nothing."""
    return DatasetCard(render_dataset_card(audit, report, topics, repo_id=repo_id, synthetic=synthetic))


def render_dataset_card(
    audit: DatasetAudit,
    report: SkipReport,
    topics: tuple[str, ...],
    *,
    repo_id: str = "m3el",
    synthetic: bool = False,
) -> str:
    """Render the dataset card (YAML and body) for a prepared folder. Pure: writes nothing.

    The text `DatasetCard.from_template` would give, without parsing it back (a fifth of a second of YAML).
    With `synthetic`, the card says everywhere that the data is a synthetic release (``m3el-hf synth``).
    """
    import jinja2

    pretty_name = "M³EL: multi-task multi-topic multi-modal entity linking"
    if synthetic:
        pretty_name = f"Synthetic {pretty_name}"

    card_data = DatasetCardData(
        pretty_name=pretty_name,
        language=["en"],
        license="other",
        license_name="mixed-wikimedia-commons",
        license_details="Images keep their Wikimedia Commons licences; descriptions come from Wikidata (CC0); "
        "the M³EL release states no licence.",
        task_categories=["image-text-to-text", "text-classification", "zero-shot-image-classification"],
        tags=["entity-linking", "multimodal-entity-linking", "wikidata", "m3el", "clip"]
        + (["synthetic"] if synthetic else []),
        size_categories=[_size_category(audit.total().instances)],
    )
    MetadataConfigs(hub_configs(audit, topics)).to_dataset_card_data(card_data)
    _infos(audit, topics).to_dataset_card_data(card_data)
    template = resources.files("m3el_hf.model_cards").joinpath("dataset_card.md").read_text(encoding="utf-8")
    values = {
        **card_data.to_dict(),
        "pretty_name": pretty_name,
        "version": __version__,
        "synthetic": synthetic,
        "topics_table": _topics_table(audit, topics),
        "split_ratios": ", ".join(f"{split} {ratio:.0%}" for split, ratio in SPLITS.items()),
        "coverage_table": _coverage_table(audit, topics),
        "audit_text": _audit_text(audit.total(), report),
        "repo_id": repo_id,
        "citation": CITATION,
    }
    return jinja2.Template(template).render(card_data=card_data.to_yaml(), **values)
