"""``m3el-hf index build`` and ``m3el-hf link``: build an entity index once, then link mentions against it."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..atomic import refuse_used_folder
from ..locations import check_checkpoint
from ..tasks import MODALITIES

if TYPE_CHECKING:
    import numpy as np

    from .linker import EntityLinker, LinkedEntity

__all__ = ["IndexConfig", "LinkConfig", "run_index", "run_link"]

_KB_HELP = (
    "a prepared M³EL folder or Hub dataset id (its --config KB), or a CSV / JSON lines file of entities: qid, name, "
    "description, and optionally topic and image (a file path relative to the list)"
)
_QUERIES = 1000


def _search(nprobe: int | None, ef_search: int | None) -> dict[str, int]:
    """The search width asked for, by FAISS's parameter names."""
    params = {"nprobe": nprobe, "efSearch": ef_search}
    for name, value in params.items():
        if value is not None and value < 1:
            raise ValueError(f"--{'ef-search' if name == 'efSearch' else name} must be at least 1, got {value}.")
    return {name: value for name, value in params.items() if value is not None}


@dataclass(frozen=True)
class IndexConfig:
    """Options of ``m3el-hf index build``."""

    action: Literal["build"] = field(metadata={"help": "What to do: build an index.", "positional": True})
    model: str = field(metadata={"help": "CLIP_ND or CLIP checkpoint folder or Hub id that embeds the entities."})
    kb: str = field(metadata={"help": f"The knowledge base: {_KB_HELP}."})
    out: Path = field(metadata={"help": "Folder to write the index to (a dataset the Hub takes as it is)."})
    config: str = field(default="all-kb", metadata={"help": "KB config of a prepared --kb: all-kb or {topic}-kb."})
    modality: Literal["T", "I", "TI"] = field(
        default="TI", metadata={"help": "Entity modality: T (name + description), I (image) or TI (both)."}
    )
    factory: str = field(
        default="Flat",
        metadata={"help": "FAISS index: Flat (exact inner product) or an approximate factory such as HNSW32."},
    )
    nprobe: int | None = field(default=None, metadata={"help": "IVF: lists searched (default: recall@10 >= 0.95)."})
    ef_search: int | None = field(
        default=None, metadata={"help": "HNSW: candidates kept (default: recall@10 >= 0.95)."}
    )
    queries: str | None = field(
        default=None, metadata={"help": "M³EL data whose mentions measure an approximate index (default: --kb's)."}
    )
    batch_size: int = field(default=256, metadata={"help": "Entities embedded per batch."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing index folder."})

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"--modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        _search(self.nprobe, self.ef_search)
        if importlib.util.find_spec("faiss") is None:  # before the knowledge base is embedded, not after
            raise ValueError('index build needs FAISS: pip install "m3el-hf[index]" (faiss-cpu).')
        check_checkpoint(self.model)


def run_index(config: IndexConfig) -> Path:
    """``m3el-hf index build``: embed the KB, save the index, say what it holds."""
    from .entities import is_entity_list, load_kb
    from .index import EntityIndex
    from .linker import EntityLinker

    out = config.out
    refuse_used_folder(out, config.overwrite)
    kb = load_kb(config.kb, config.config)
    linker = EntityLinker.from_pretrained(config.model)
    search = _search(config.nprobe, config.ef_search)
    queries = None if config.factory == "Flat" else _mention_queries(linker, config)
    index = EntityIndex.build(
        linker, kb, config.modality, config.factory, config.batch_size, search=search, queries=queries
    )
    index.save(out, overwrite=config.overwrite)
    info = index.info
    recall = (
        f"; recall@10 against exact search {info['recall@10']:.3f} on {info['recall_queries']}, with "
        f"{info.get('search') or 'its defaults'}"
        if "recall@10" in info
        else ""
    )
    source = config.kb if is_entity_list(config.kb) else f"{config.kb} ({config.config})"
    print(
        f"Wrote {out}: {len(index)} entities of {source}, modality {config.modality}, "
        f"{info['skipped']} left out (lacking an input the modality needs), FAISS {config.factory}{recall}"
    )
    return out


def _mention_queries(linker: EntityLinker, config: IndexConfig) -> np.ndarray | None:
    """Embeddings of up to 1,000 mentions of `config.queries` (or of a prepared --kb), validation split first."""
    from .entities import is_entity_list
    from .linker import Mention

    source = config.queries or (None if is_entity_list(config.kb) else config.kb)
    if source is None:
        return None
    import datasets

    topics = config.config.removesuffix("-kb")
    rows: list[dict[str, Any]] = []
    for split in ("validation", "train"):
        if len(rows) < _QUERIES:
            found = datasets.load_dataset(source, topics, split=split).select_columns(
                ["mention", "sentence", "mention_image"]
            )
            rows.extend(found.select(range(min(found.num_rows, _QUERIES - len(rows)))))
    mentions = [Mention(r["mention"], r["sentence"], r["mention_image"]) for r in rows]
    return linker.embed_queries(mentions).float().cpu().numpy()


@dataclass(frozen=True)
class LinkConfig:
    """Options of ``m3el-hf link``."""

    model: str = field(metadata={"help": "CLIP_ND or CLIP checkpoint folder or Hub id."})
    mention: str | None = field(
        default=None, metadata={"help": "The mention's surface form, e.g. Paris (not needed for --mention-modality I)."}
    )
    sentence: str | None = field(default=None, metadata={"help": "The sentence the mention occurs in."})
    image: Path | None = field(default=None, metadata={"help": "A picture of the mention."})
    mention_modality: Literal["T", "I", "TI"] | None = field(
        default=None, metadata={"help": "Mention modality: T, I (the picture alone) or TI (default: TI with --image)."}
    )
    index: Path | None = field(default=None, metadata={"help": "Index folder written by m3el-hf index build."})
    kb: str | None = field(default=None, metadata={"help": f"Or a KB embedded on the fly: {_KB_HELP}."})
    config: str = field(default="all-kb", metadata={"help": "KB config of a prepared --kb: all-kb or {topic}-kb."})
    modality: Literal["T", "I", "TI"] | None = field(
        default=None,
        metadata={
            "help": "Entity modality (default: the index's; with --kb, TI when every entity has an image, else T)."
        },
    )
    top_k: int = field(default=5, metadata={"help": "Entities to return."})
    json: bool = field(default=False, metadata={"help": "Print JSON (one object per entity) instead of a table."})
    nprobe: int | None = field(default=None, metadata={"help": "IVF index: lists searched (default: the index's)."})
    ef_search: int | None = field(
        default=None, metadata={"help": "HNSW index: candidates kept (default: the index's)."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Refuse an --image of more pixels, as prepare does (default: PIL's limit)."}
    )
    allow_other_checkpoint: bool = field(
        default=False, metadata={"help": "Use an --index another checkpoint built, whose scores do not compare."}
    )

    def __post_init__(self) -> None:
        if (self.index is None) == (self.kb is None):
            raise ValueError("Pass --index DIR (built by m3el-hf index build) or --kb DATA, one of them.")
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {self.top_k}.")
        modality = self.mention_modality or ("TI" if self.image is not None else "T")
        if "T" in modality and not (self.mention or "").strip():
            raise ValueError("--mention is empty: give the words of the sentence that name the entity, e.g. Paris.")
        if "I" in modality and self.image is None:
            raise ValueError(f"--mention-modality {modality} links the mention's picture: pass --image FILE.")
        if self.image is not None and not self.image.is_file():
            raise FileNotFoundError(f"--image {self.image} is not a file.")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"--max-pixels must be at least 1, got {self.max_pixels}.")
        if self.kb is not None and _search(self.nprobe, self.ef_search):
            raise ValueError("--nprobe and --ef-search set how an --index searches; --kb ranks every entity.")
        check_checkpoint(self.model)


def run_link(config: LinkConfig) -> list[LinkedEntity]:
    """``m3el-hf link``: rank the KB's entities for one mention and print them.

    The picture and the index are read before the model loads, so a mistake in either costs no model load; only
    what this path needs is imported (`datasets` only for ``--kb``).
    """
    from ..images import load_user_image

    image = None
    if config.image is not None and config.mention_modality != "T":
        image = load_user_image(config.image, config.max_pixels, f"--image {config.image}")
    if config.index is not None:
        from .index import EntityIndex

        index = EntityIndex.load(config.index)
        index.check_modality(config.modality)
        index.set_search(**_search(config.nprobe, config.ef_search))
    from .linker import EntityLinker

    linker = EntityLinker.from_pretrained(config.model, max_pixels=config.max_pixels)
    asked = {"top_k": config.top_k, "mention_modality": config.mention_modality}
    if config.index is not None:
        asked.update(index=index, allow_other_checkpoint=config.allow_other_checkpoint)
    else:
        from .entities import load_kb

        asked.update(candidates=load_kb(config.kb, config.config), entity_modality=config.modality)
    found = linker.link(config.mention or "", config.sentence, image, **asked)
    for entity in found:
        if config.json:
            shown = {f.name: getattr(entity, f.name) for f in fields(entity) if f.name != "stored_image"}
            print(json.dumps(shown, ensure_ascii=False))
        else:
            print(f"{entity.rank:2d}. {entity.qid:>12s}  {entity.score:+.4f}  {entity.name}: {entity.description}")
    return found
