"""``m3el-hf index build`` and ``m3el-hf link``: build an entity index once, then link mentions against it."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..atomic import refuse_used_folder
from ..locations import check_checkpoint
from ..tasks import MODALITIES

if TYPE_CHECKING:
    from .linker import LinkedEntity

__all__ = ["IndexConfig", "LinkConfig", "run_index", "run_link"]


@dataclass(frozen=True)
class IndexConfig:
    """Options of ``m3el-hf index build``."""

    action: Literal["build"] = field(metadata={"help": "What to do: build an index.", "positional": True})
    model: str = field(metadata={"help": "CLIP_ND or CLIP checkpoint folder or Hub id that embeds the entities."})
    kb: str = field(metadata={"help": "Prepared M³EL folder or Hub dataset id holding the knowledge base."})
    out: Path = field(metadata={"help": "Folder to write the index to (a dataset the Hub takes as it is)."})
    config: str = field(default="all-kb", metadata={"help": "KB config: all-kb or {topic}-kb."})
    modality: Literal["T", "I", "TI"] = field(
        default="TI", metadata={"help": "Entity modality: T (name + description), I (image) or TI (both)."}
    )
    factory: str = field(
        default="Flat",
        metadata={"help": "FAISS index: Flat (exact inner product) or an approximate factory such as HNSW32."},
    )
    batch_size: int = field(default=256, metadata={"help": "Entities embedded per batch."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing index folder."})

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"--modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if importlib.util.find_spec("faiss") is None:  # before the knowledge base is embedded, not after
            raise ValueError('index build needs FAISS: pip install "m3el-hf[index]" (faiss-cpu).')
        check_checkpoint(self.model)


def run_index(config: IndexConfig) -> Path:
    """``m3el-hf index build``: embed the KB, save the index, say what it holds."""
    import datasets

    from . import EntityIndex, EntityLinker

    out = config.out
    refuse_used_folder(out, config.overwrite)
    kb = datasets.load_dataset(config.kb, config.config, split="kb")
    linker = EntityLinker.from_pretrained(config.model)
    index = EntityIndex.build(linker, kb, config.modality, config.factory, config.batch_size)
    index.save(out, overwrite=config.overwrite)
    recall = f"; recall@10 against exact search {index.info['recall@10']:.3f}" if "recall@10" in index.info else ""
    print(
        f"Wrote {out}: {len(index)} entities of {config.kb} ({config.config}), modality {config.modality}, "
        f"{index.info['skipped']} left out (lacking an input the modality needs), FAISS {config.factory}{recall}"
    )
    return out


@dataclass(frozen=True)
class LinkConfig:
    """Options of ``m3el-hf link``."""

    model: str = field(metadata={"help": "CLIP_ND or CLIP checkpoint folder or Hub id."})
    mention: str = field(metadata={"help": "The mention's surface form, e.g. Paris."})
    sentence: str | None = field(default=None, metadata={"help": "The sentence the mention occurs in."})
    image: Path | None = field(default=None, metadata={"help": "A picture of the mention (the mention side is TI)."})
    index: Path | None = field(default=None, metadata={"help": "Index folder written by m3el-hf index build."})
    kb: str | None = field(
        default=None, metadata={"help": "Or a prepared M³EL folder or Hub id: its KB is embedded on the fly."}
    )
    config: str = field(default="all-kb", metadata={"help": "KB config with --kb: all-kb or {topic}-kb."})
    modality: Literal["T", "I", "TI"] | None = field(
        default=None,
        metadata={"help": "Entity modality with --kb (default: TI when every entity has an image, else T)."},
    )
    top_k: int = field(default=5, metadata={"help": "Entities to return."})
    json: bool = field(default=False, metadata={"help": "Print JSON (one object per entity) instead of a table."})
    max_pixels: int | None = field(
        default=None, metadata={"help": "Refuse an --image of more pixels, as prepare does (default: PIL's limit)."}
    )
    allow_other_checkpoint: bool = field(
        default=False, metadata={"help": "Use an --index another checkpoint built, whose scores do not compare."}
    )

    def __post_init__(self) -> None:
        if (self.index is None) == (self.kb is None):
            raise ValueError("Pass --index DIR (built by m3el-hf index build) or --kb DATA, one of them.")
        if self.index is not None and self.modality is not None:
            raise ValueError("--modality is for --kb; an index was built for one entity modality.")
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {self.top_k}.")
        if not self.mention.strip():
            raise ValueError("--mention is empty: give the words of the sentence that name the entity, e.g. Paris.")
        if self.image is not None and not self.image.is_file():
            raise FileNotFoundError(f"--image {self.image} is not a file.")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"--max-pixels must be at least 1, got {self.max_pixels}.")
        check_checkpoint(self.model)


def run_link(config: LinkConfig) -> list[LinkedEntity]:
    """``m3el-hf link``: rank the KB's entities for one mention and print them.

    The picture and the index are read before the model loads, so a mistake in either costs no model load; only
    what this path needs is imported (`datasets` only for ``--kb``).
    """
    from ..images import load_user_image

    image = (
        None if config.image is None else load_user_image(config.image, config.max_pixels, f"--image {config.image}")
    )
    if config.index is not None:
        from .index import EntityIndex

        index = EntityIndex.load(config.index)
    from .linker import EntityLinker

    linker = EntityLinker.from_pretrained(config.model, max_pixels=config.max_pixels)
    if config.index is not None:
        found = linker.link(
            config.mention,
            config.sentence,
            image,
            index=index,
            top_k=config.top_k,
            allow_other_checkpoint=config.allow_other_checkpoint,
        )
    else:
        import datasets

        kb = datasets.load_dataset(config.kb, config.config, split="kb")
        found = linker.link(
            config.mention, config.sentence, image, candidates=kb, top_k=config.top_k, entity_modality=config.modality
        )
    for entity in found:
        if config.json:
            shown = {f.name: getattr(entity, f.name) for f in fields(entity) if f.name != "stored_image"}
            print(json.dumps(shown, ensure_ascii=False))
        else:
            print(f"{entity.rank:2d}. {entity.qid:>12s}  {entity.score:+.4f}  {entity.name}: {entity.description}")
    return found
