"""``m3el-hf show``: load a prepared folder (or Hub repo) with stock ``datasets`` and print a summary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import CARD_NAME
from ..locations import check_prepared

__all__ = ["ShowConfig", "card_sections", "show"]


@dataclass(frozen=True)
class ShowConfig:
    """Options of ``m3el-hf show``."""

    path: str = field(metadata={"help": "Prepared M³EL folder or Hub dataset id.", "positional": True})
    config: str = field(default="all", metadata={"help": "Config to load, e.g. movies, movies-I-T, movies-kb."})
    sections: tuple[str, ...] = field(
        default=("Topics and splits", "Data audit"),
        metadata={"help": "Dataset-card sections to print."},
    )


def card_sections(card_text: str, titles: tuple[str, ...]) -> dict[str, str]:
    """The text under each ``## title`` of a dataset card."""
    found = {}
    for title in titles:
        match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card_text, flags=re.S | re.M)
        if match:
            found[title] = match.group(1).strip()
    return found


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(config: ShowConfig) -> None:
    """Print the config's splits and columns, its first row, and sections of the dataset card."""
    import datasets

    from .loading import check_config

    check_prepared(config.path, "path")
    if Path(config.path).is_dir():
        check_config(config.path, config.config)
    dataset = datasets.load_dataset(config.path, config.config)
    print(f"load_dataset({config.path!r}, {config.config!r}):")
    for split, part in dataset.items():
        print(f"  {split:10s} {part.num_rows:7d} rows  columns: {', '.join(part.column_names)}")
    first = next(iter(dataset.values()))
    if first.num_rows:
        print("First row:")
        for key, value in first[0].items():
            print(f"  {key}: {_short(value)}")
    readme = Path(config.path) / CARD_NAME
    if readme.is_file():
        for title, text in card_sections(readme.read_text(encoding="utf-8"), config.sections).items():
            print(f"\n## {title}\n{text}")
