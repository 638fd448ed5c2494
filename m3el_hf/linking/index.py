"""`EntityIndex`: a knowledge base's entity embeddings, computed once, stored as a dataset, searched with FAISS.

A saved index is a folder the Hub takes as a dataset repo::

    index/
      README.md          the card: checkpoint, entity modality, counts, how to load it
      index.json         what built it (checkpoint, weights' fingerprint, templates, fusion, width), the entity
                         modality, the FAISS factory, counts (and recall@10 if approximate)
      index.faiss        the FAISS index as built (`faiss.write_index`)
      data/index-00000-of-00001.parquet   qid, name, description, topic, image, embeddings

Search is FAISS's: ``"Flat"`` (exact inner product, the default) or any FAISS factory string, e.g. ``"HNSW32"``
(approximate: its search width and its recall@10 against exact search on mention queries are chosen and measured
when it is built, `m3el_hf.linking.approximate`, and stored in ``index.json``).
Loading reads the FAISS index as saved (memory-mapped where FAISS can, as for ``Flat``: the embeddings are not
copied) and the entities' text columns; their images are read from the Parquet files only for the entities a
search returns, and the embeddings column only to save the index again or to rebuild it with another factory.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..atomic import refuse_used_folder, replace_dir
from ..json_files import read_json, write_json
from ..progress import progress as progress_bar
from ..tasks import MODALITIES
from .approximate import recall_at_k, set_search, tune
from .checks import ENCODER_KEYS, check_encoder, check_factory, count_embeddable, faiss_reason, import_faiss
from .entities import unique_entities
from .linker import LinkedEntity
from .storage import ImageColumn, list_array, parquet_files, read_parquet, write_parquet

if TYPE_CHECKING:
    import datasets
    import torch

    from .linker import EntityLinker

__all__ = ["EMBEDDINGS", "FAISS_FILE", "INDEX_FILE", "EntityIndex"]

EMBEDDINGS = "embeddings"
INDEX_FILE = "index.json"
FAISS_FILE = "index.faiss"
_DATA_FILE = "data/index-00000-of-00001.parquet"
_COLUMNS = ("qid", "name", "description", "topic", "image")
_TEXT_COLUMNS = ("qid", "name", "description", "topic")
_REQUIRED = ("checkpoint", "encoder", "modality", "factory", "dimension", "entities", "skipped")
_RECALL_QUERIES = 1000


@dataclass
class EntityIndex:
    """Entities embedded by one encoder for one entity `modality`, and the FAISS index (`searcher`) over them.

    `source` holds the entities (qid, name, description, topic, image and their `EMBEDDINGS`): a table in memory
    when built, the folder it was loaded from when loaded. `encoder` is what built it
    (`m3el_hf.linking.checks.encoder_identity`): searching it with another checkpoint's mention embeddings is
    refused (`check_encoder`).

    >>> index = EntityIndex.build(linker, datasets.load_dataset("m3el", "all-kb", split="kb"))  # doctest: +SKIP
    >>> index.save("index-all-kb")  # doctest: +SKIP
    """

    source: pa.Table | Path
    searcher: Any
    modality: str
    encoder: dict[str, Any]
    factory: str = "Flat"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.searcher is not None and self.info.get("search"):
            set_search(self.searcher, self.info["search"], self.factory)
        if isinstance(self.source, pa.Table):
            self.rows = self.source.select([c for c in _TEXT_COLUMNS if c in self.source.column_names])
        else:
            self.rows = read_parquet(self.source, lambda names: [c for c in _TEXT_COLUMNS if c in names])
        self._images: ImageColumn | None = None

    @property
    def checkpoint(self) -> str:
        """The checkpoint that embedded the entities, as it was named (a folder or Hub id)."""
        return self.encoder["checkpoint"]

    @property
    def _label(self) -> str:
        """How messages name this index: by its folder where it was loaded from one."""
        return f"The index {self.source}" if isinstance(self.source, Path) else "The index"

    def __len__(self) -> int:
        return self.rows.num_rows

    @classmethod
    def build(
        cls,
        linker: EntityLinker,
        kb: datasets.Dataset,
        modality: str = "TI",
        factory: str = "Flat",
        batch_size: int = 256,
        progress: bool = True,
        search: Mapping[str, int] | None = None,
        queries: np.ndarray | None = None,
    ) -> EntityIndex:
        """Embed every entity of `kb` (a ``{topic}-kb`` config, or any dataset with qid, name, description and,
        for image modalities, image) in batches; entities lacking an input the modality needs are left out and
        counted (``info["skipped"]``). The factory, its `search` width and the modality are checked before
        anything is embedded.

        An approximate index's recall@10 against exact search is measured on `queries` (mention embeddings,
        e.g. `EntityLinker.embed_queries` of held-out mentions; without them, on entities, which flatters it) and
        stored with its width: `search` (``{"nprobe": 8}`` for IVF, ``{"efSearch": 64}`` for HNSW), or else the
        narrowest that reaches `m3el_hf.linking.approximate.RECALL_TARGET` (`approximate.tune`).
        """
        kb = unique_entities(kb, "the KB")
        dimension = linker.model.config.projection_dim
        probe = check_factory(factory, dimension, count_embeddable(kb, modality, "the KB"))
        set_search(probe, search or {}, factory)
        table, vectors = _embedded_table(linker, kb, modality, batch_size, progress)
        info = {"entities": table.num_rows, "skipped": kb.num_rows - table.num_rows, "dimension": dimension}
        index = cls(table, _searcher(vectors, factory), modality, linker.identity, factory, info)
        if factory != "Flat":
            index._measure(vectors, queries, search)
        return index

    def _measure(self, vectors: np.ndarray, queries: np.ndarray | None, search: Mapping[str, int] | None) -> None:
        """Record recall@10 on `queries` (or sampled entities) at the `search` width, or at the one `tune` picks."""
        if queries is not None and len(queries):
            queries, asked = np.asarray(queries, dtype=np.float32)[:_RECALL_QUERIES], "mentions"
        else:
            rng = np.random.default_rng(0)
            queries = vectors[rng.choice(len(vectors), size=min(_RECALL_QUERIES, len(vectors)), replace=False)]
            asked = "entities (no mention queries: this flatters it)"
        if search:
            self.set_search(**search)
            recall = recall_at_k(self.searcher, vectors, queries)
        else:
            self.info["search"], recall = tune(self.searcher, vectors, queries, self.factory)
        self.info["recall@10"] = recall
        self.info["recall_queries"] = f"{len(queries)} {asked}"

    def set_search(self, **params: int) -> None:
        """Set how wide the search is (``nprobe=`` for IVF, ``efSearch=`` for HNSW), as `save` will store it."""
        set_search(self.searcher, params, self.factory)
        if params:
            self.info["search"] = {**self.info.get("search", {}), **params}

    def embeddings(self) -> np.ndarray:
        """The entities' embeddings, `(len(self), dimension)` float32, row by row (read from disk if loaded)."""
        table = self.source if isinstance(self.source, pa.Table) else read_parquet(self.source, lambda _: [EMBEDDINGS])
        column = table.column(EMBEDDINGS).combine_chunks()
        return column.flatten().to_numpy().reshape(len(column), -1)

    def recall_against_exact(self, k: int = 10, queries: np.ndarray | None = None, seed: int = 0) -> float:
        """Mean share of the exact top-`k` that this index returns for `queries` (default: up to 1,000 of its own
        entity embeddings, drawn with `seed`)."""
        vectors = self.embeddings()
        if queries is None:
            rng = np.random.default_rng(seed)
            queries = vectors[rng.choice(len(vectors), size=min(_RECALL_QUERIES, len(vectors)), replace=False)]
        return recall_at_k(self.searcher, vectors, queries, k)

    def check_encoder(self, encoder: Mapping[str, Any], allow_other: bool = False) -> None:
        """Refuse to search this index with mention embeddings of `encoder` unless it built the index (or
        `allow_other`); see `m3el_hf.linking.checks.check_encoder`."""
        check_encoder(self.encoder, encoder, self._label, allow_other)

    def check_modality(self, modality: str | None) -> None:
        """Refuse an entity `modality` other than the one this index was built for (None: the index's)."""
        if modality is not None and modality != self.modality:
            raise ValueError(
                f"{self._label} holds entity modality {self.modality} embeddings; entity modality {modality} needs an "
                f"index built with --modality {modality}."
            )

    def search(self, queries: torch.Tensor | np.ndarray, top_k: int = 5) -> list[list[LinkedEntity]]:
        """The `top_k` entities of each query embedding, best first."""
        queries = queries.float().cpu().numpy() if hasattr(queries, "cpu") else np.asarray(queries)
        scores, ids = self.searcher.search(np.ascontiguousarray(queries, dtype=np.float32), min(top_k, len(self)))
        hits = sorted({int(i) for i in ids.ravel() if i >= 0})
        rows = {i: self.rows.slice(i, 1).to_pylist()[0] for i in hits}  # `take` would import pandas
        images = dict(zip(hits, self._take_images(hits), strict=True))
        return [
            [
                _entity(rank, rows[int(i)], images[int(i)], float(score))
                for rank, (i, score) in enumerate(zip(found, row_scores, strict=True), 1)
                if i >= 0
            ]
            for found, row_scores in zip(ids, scores, strict=True)
        ]

    def _take_images(self, rows: list[int]) -> list[Any]:
        if isinstance(self.source, Path):
            self._images = self._images or ImageColumn(parquet_files(self.source))
            return self._images.take(rows)
        if "image" not in self.source.column_names:
            return [None] * len(rows)
        column = self.source.column("image")
        return [column[row].as_py() for row in rows]

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder (card, ``index.json``, FAISS index, Parquet) atomically; returns it."""
        folder = Path(folder)
        refuse_used_folder(folder, overwrite)
        table = self.source if isinstance(self.source, pa.Table) else read_parquet(self.source, lambda names: names)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        try:
            (staging / "data").mkdir()
            write_parquet(table, staging / _DATA_FILE)
            import_faiss().write_index(self.searcher, str(staging / FAISS_FILE))
            encoder = {key: self.encoder[key] for key in ENCODER_KEYS}
            meta = {"checkpoint": self.checkpoint, "encoder": encoder, "modality": self.modality}
            meta |= {"factory": self.factory, **self.info}
            write_json(staging / INDEX_FILE, meta)
            (staging / "README.md").write_text(_card(meta), encoding="utf-8")
            replace_dir(staging, folder, overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, factory: str | None = None) -> EntityIndex:
        """Load a folder written by `save` (or its Hub dataset repo, downloaded), optionally with another factory
        (built from the stored embeddings)."""
        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not an entity index: it has no {INDEX_FILE} (m3el-hf index build).")
        meta = read_index_json(folder)
        info = {k: v for k, v in meta.items() if k not in ("checkpoint", "encoder", "modality", "factory")}
        encoder = {"checkpoint": meta["checkpoint"], "dimension": meta["dimension"], **meta["encoder"]}
        if factory is not None and factory != meta["factory"]:
            info = {k: v for k, v in info.items() if k not in ("search", "recall@10", "recall_queries")}
            index = cls(folder, None, meta["modality"], encoder, factory, info)
            index.searcher = _searcher(index.embeddings(), factory)
            return index
        faiss = import_faiss()
        try:
            searcher = faiss.read_index(str(folder / FAISS_FILE), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as error:
            message = f"{folder / FAISS_FILE} is not a FAISS index FAISS can read ({faiss_reason(error)})."
            raise ValueError(message) from None
        index = cls(folder, searcher, meta["modality"], encoder, meta["factory"], info)
        if searcher.ntotal != len(index) or searcher.d != meta["dimension"]:
            raise ValueError(
                f"{folder / FAISS_FILE} holds {searcher.ntotal} vectors of {searcher.d} dimensions, but the folder "
                f"has {len(index)} entities of {meta['dimension']}: build the index again (m3el-hf index build)."
            )
        return index


def read_index_json(folder: Path) -> dict[str, Any]:
    """``index.json`` of an index folder, refused in one line where it lacks a key or names no modality."""
    path = folder / INDEX_FILE
    meta = read_json(path)
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: build the index again with m3el-hf index build.")
    if meta["modality"] not in MODALITIES:
        raise ValueError(f"{path} names the entity modality {meta['modality']!r}; expected one of {MODALITIES}.")
    return meta


def _embedded_table(
    linker: EntityLinker, kb: datasets.Dataset, modality: str, batch_size: int, progress: bool
) -> tuple[pa.Table, np.ndarray]:
    """The entities of `kb` that `modality` can embed, with their `EMBEDDINGS` column, and the embeddings."""
    import datasets

    missing = [c for c in ("qid", "name", "description") if c not in kb.column_names]
    if missing:
        raise ValueError(f"The KB lacks the column(s) {missing} that an entity index needs.")
    columns = [c for c in _COLUMNS if c in kb.column_names]
    source = kb.select_columns(columns)
    if "image" in columns:
        source = source.cast_column("image", datasets.Image(decode=False))
    kept, vectors = _embed(linker, source, modality, batch_size, progress)
    features = source.features.copy()
    if "image" in features:
        features["image"] = datasets.Image()  # stock readers decode it
    features[EMBEDDINGS] = datasets.List(datasets.Value("float32"))
    table = source.select(kept).with_format("arrow")[:].append_column(EMBEDDINGS, list_array(vectors))
    return table.replace_schema_metadata(features.arrow_schema.metadata), vectors


def _embed(linker: EntityLinker, source: Any, modality: str, batch_size: int, show: bool) -> tuple[list, np.ndarray]:
    """The rows of `source` that `modality` can embed, and their embeddings, a batch at a time."""
    kept, chunks = [], []
    starts = range(0, len(source), batch_size)
    bar = progress_bar(starts, desc=f"Embedding {len(source)} entities", total=len(starts), unit="batch", show=show)
    for start in bar:
        rows = source[start : start + batch_size]
        entities = [{k: rows[k][i] for k in rows} for i in range(len(rows["qid"]))]
        embeddings, usable = linker.embed_entities(entities, modality)
        kept += (start + usable.nonzero().flatten()).tolist()
        chunks.append(embeddings[usable.to(embeddings.device)].float().cpu().numpy())
    dimension = linker.model.config.projection_dim
    return kept, np.concatenate(chunks) if chunks else np.zeros((0, dimension), np.float32)


def _searcher(vectors: np.ndarray, factory: str) -> Any:
    """A FAISS inner-product index of `factory` over `vectors`, trained on all of them where it needs training."""
    faiss = import_faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
    except RuntimeError as error:
        message = f"FAISS cannot build {factory!r} over {len(vectors)} entities ({faiss_reason(error)})."
        raise ValueError(message) from None
    return index


def _entity(rank: int, row: dict[str, Any], image: Any, score: float) -> LinkedEntity:
    return LinkedEntity(
        rank=rank,
        qid=row["qid"],
        name=row.get("name") or "",
        description=row.get("description") or "",
        score=score if math.isfinite(score) else float("-inf"),
        topic=row.get("topic"),
        stored_image=image,
    )


def _card(meta: dict[str, Any]) -> str:
    """The index folder's dataset card: what was embedded, by which checkpoint, for which entity modality."""
    recall = (
        f" Its recall@10 against exact search: {meta['recall@10']:.3f} on {meta['recall_queries']}, searching with "
        f"{meta.get('search') or 'its defaults'}."
        if "recall@10" in meta
        else ""
    )
    return (
        "---\ntags:\n- m3el\n- entity-linking\n- faiss\n- embeddings\nconfigs:\n- config_name: default\n"
        "  data_files:\n  - split: train\n    path: data/*.parquet\n---\n\n"
        f"# Entity index\n\nEmbeddings of {meta['entities']} entities ({meta['skipped']} left out: they lack an "
        f"input the modality needs) by the checkpoint `{meta['checkpoint']}` (weights "
        f"`{meta['encoder']['weights']}`), entity modality `{meta['modality']}` ({meta['dimension']} dimensions, "
        f"inner product), for `m3el_hf.EntityIndex` (FAISS factory `{meta['factory']}`, in `{FAISS_FILE}`)."
        f"{recall}\n\n```bash\nm3el-hf link --model {meta['checkpoint'] or 'CHECKPOINT'} "
        "--index THIS_FOLDER --mention 'Paris' --sentence 'Paris is the capital of France.'\n```\n"
    )
