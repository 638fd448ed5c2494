"""`EntityIndex`: a knowledge base's entity embeddings, computed once, stored as a dataset, searched with FAISS.

A saved index is a folder the Hub takes as a dataset repo::

    index/
      README.md          the card: checkpoint, entity modality, counts, how to load it
      index.json         checkpoint, modality, dimension, FAISS factory, counts (and recall@10 if approximate)
      data/index-00000-of-00001.parquet   qid, name, description, topic, image, embeddings

Search goes through `datasets`' FAISS integration (`Dataset.add_faiss_index`): ``"Flat"`` (exact inner
product, the default) or any FAISS factory string, e.g. ``"HNSW32"`` (approximate; its recall@10 against
the exact index is measured when it is built and stored in ``index.json``).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..atomic import refuse_used_folder, replace_dir
from ..json_files import read_json, write_json
from ..progress import progress as progress_bar
from .linker import EntityLinker, LinkedEntity, as_pil

__all__ = ["EMBEDDINGS", "INDEX_FILE", "EntityIndex"]

EMBEDDINGS = "embeddings"
INDEX_FILE = "index.json"
_COLUMNS = ("qid", "name", "description", "topic", "image")
_RECALL_QUERIES = 1000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("EntityIndex searches with FAISS: pip install 'm3el-hf[index]' (faiss-cpu).") from None
    return faiss


@dataclass
class EntityIndex:
    """Entity rows with their embeddings (`dataset`) for one checkpoint and entity `modality`, and a FAISS index.

    >>> index = EntityIndex.build(linker, datasets.load_dataset("m3el", "all-kb", split="kb"))  # doctest: +SKIP
    >>> index.save("index-all-kb")  # doctest: +SKIP
    """

    dataset: datasets.Dataset
    modality: str
    checkpoint: str
    factory: str = "Flat"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        faiss = _faiss()
        self.dataset.add_faiss_index(
            column=EMBEDDINGS,
            index_name=EMBEDDINGS,
            string_factory=self.factory,
            metric_type=faiss.METRIC_INNER_PRODUCT,
            train_size=None if self.factory == "Flat" else len(self.dataset),
        )

    def __len__(self) -> int:
        return self.dataset.num_rows

    @classmethod
    def build(
        cls,
        linker: EntityLinker,
        kb: datasets.Dataset,
        modality: str = "TI",
        factory: str = "Flat",
        batch_size: int = 256,
        progress: bool = True,
    ) -> EntityIndex:
        """Embed every entity of `kb` (a ``{topic}-kb`` config, or any dataset with qid, name, description and,
        for image modalities, image) in batches; entities lacking an input the modality needs are left out and
        counted (``info["skipped"]``)."""
        missing = [c for c in ("qid", "name", "description") if c not in kb.column_names]
        if missing or (modality != "T" and "image" not in kb.column_names):
            raise ValueError(f"The KB lacks the column(s) {missing or ['image']} that a {modality!r} index needs.")
        columns = [c for c in _COLUMNS if c in kb.column_names]
        source = kb.select_columns(columns)
        if "image" in columns:
            source = source.cast_column("image", datasets.Image(decode=False))
        kept, chunks = [], []
        starts = range(0, len(source), batch_size)
        bar = progress_bar(
            starts, desc=f"Embedding {len(source)} entities", total=len(starts), unit="batch", show=progress
        )
        for start in bar:
            rows = source[start : start + batch_size]
            entities = [{k: rows[k][i] for k in columns} for i in range(len(rows["qid"]))]
            embeddings, usable = linker.embed_entities(entities, modality)
            kept += (start + usable.nonzero().flatten()).tolist()
            chunks.append(embeddings[usable.to(embeddings.device)].float().cpu().numpy())
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, linker.model.config.projection_dim), np.float32)
        table = source.select(kept).add_column(EMBEDDINGS, list(vectors))
        table = table.cast_column(EMBEDDINGS, datasets.List(datasets.Value("float32")))
        info = {"entities": len(kept), "skipped": len(source) - len(kept), "dimension": int(vectors.shape[1])}
        index = cls(table, modality, linker.checkpoint, factory, info)
        if factory != "Flat":
            index.info["recall@10"] = index.recall_against_exact()
        return index

    def recall_against_exact(self, k: int = 10, queries: int = _RECALL_QUERIES, seed: int = 0) -> float:
        """Mean share of the exact top-`k` that this index returns, for `queries` entity embeddings as queries."""
        rng = np.random.default_rng(seed)
        vectors = np.asarray(self.dataset.with_format("numpy")[EMBEDDINGS], dtype=np.float32)
        picked = vectors[rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)]
        exact = np.argsort(-(picked @ vectors.T), axis=1, kind="stable")[:, :k]
        found = self.dataset.search_batch(EMBEDDINGS, picked, k=k).total_indices
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact.tolist(), found, strict=True)]))

    def search(self, queries: torch.Tensor | np.ndarray, top_k: int = 5) -> list[list[LinkedEntity]]:
        """The `top_k` entities of each query embedding, best first."""
        queries = queries.float().cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries)
        found = self.dataset.search_batch(EMBEDDINGS, queries.astype(np.float32), k=min(top_k, len(self)))
        rows = self.dataset.select_columns([c for c in _COLUMNS if c in self.dataset.column_names])
        return [
            [
                _entity(rank, rows[int(i)], float(score))
                for rank, (i, score) in enumerate(zip(ids, scores, strict=True), 1)
                if i >= 0
            ]
            for ids, scores in zip(found.total_indices, found.total_scores, strict=True)
        ]

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder (card, ``index.json``, Parquet) atomically; returns it."""
        folder = Path(folder)
        refuse_used_folder(folder, overwrite)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        try:
            (staging / "data").mkdir()
            self.dataset.to_parquet(str(staging / "data" / "index-00000-of-00001.parquet"))
            meta = {"checkpoint": self.checkpoint, "modality": self.modality, "factory": self.factory, **self.info}
            write_json(staging / INDEX_FILE, meta)
            (staging / "README.md").write_text(_card(meta), encoding="utf-8")
            replace_dir(staging, folder, overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, factory: str | None = None) -> EntityIndex:
        """Load a folder written by `save` (or its Hub dataset repo, downloaded), optionally with another factory."""
        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not an entity index: it has no {INDEX_FILE} (m3el-hf index build).")
        meta = read_json(folder / INDEX_FILE)
        files = sorted(str(p) for p in (folder / "data").glob("*.parquet"))
        dataset = datasets.Dataset.from_parquet(files)
        info = {k: v for k, v in meta.items() if k not in ("checkpoint", "modality", "factory")}
        return cls(dataset, meta["modality"], meta["checkpoint"], factory or meta["factory"], info)


def _entity(rank: int, row: dict[str, Any], score: float) -> LinkedEntity:
    image = row.get("image")
    return LinkedEntity(
        rank=rank,
        qid=row["qid"],
        name=row.get("name") or "",
        description=row.get("description") or "",
        score=score if math.isfinite(score) else float("-inf"),
        topic=row.get("topic"),
        image=as_pil(image) if image is not None else None,
    )


def _card(meta: dict[str, Any]) -> str:
    """The index folder's dataset card: what was embedded, by which checkpoint, for which entity modality."""
    recall = f" Its recall@10 against exact search: {meta['recall@10']:.3f}." if "recall@10" in meta else ""
    return (
        "---\ntags:\n- m3el\n- entity-linking\n- faiss\n- embeddings\nconfigs:\n- config_name: default\n"
        "  data_files:\n  - split: train\n    path: data/*.parquet\n---\n\n"
        f"# Entity index\n\nEmbeddings of {meta['entities']} entities ({meta['skipped']} left out: they lack an "
        f"input the modality needs) by the checkpoint `{meta['checkpoint']}`, entity modality `{meta['modality']}` "
        f"({meta['dimension']} dimensions, inner product), for `m3el_hf.EntityIndex` (FAISS factory "
        f"`{meta['factory']}`).{recall}\n\n```bash\nm3el-hf link --model {meta['checkpoint'] or 'CHECKPOINT'} "
        "--index THIS_FOLDER --mention 'Paris' --sentence 'Paris is the capital of France.'\n```\n"
    )
