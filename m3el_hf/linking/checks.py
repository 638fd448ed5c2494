"""What an entity index must agree with, checked before the work it protects, each mistake refused in one line.

- **The encoder that built it** (`encoder_identity`): a fingerprint of the checkpoint's weights, its embedding
  width, its templates and its fusion. Scores of a mention embedded by one checkpoint against entities embedded
  by another do not compare, so `check_encoder` refuses such an index unless told otherwise.
- **The FAISS factory** (`check_factory`): FAISS raises a C++ error for a string it cannot parse and for an
  index that needs more training points than there are entities; both are found before any embedding.
- **The KB's inputs** (`count_embeddable`): a modality that no entity of the KB can serve (``I`` without images).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ENCODER_KEYS",
    "check_encoder",
    "check_factory",
    "count_embeddable",
    "encoder_identity",
    "faiss_reason",
    "import_faiss",
]

logger = logging.getLogger(__name__)

ENCODER_KEYS = ("weights", "mention_template", "entity_template", "fusion", "fusion_text_weight")
"""What `check_encoder` compares besides the width: the weights' fingerprint, the templates and the fusion."""
_OVERRIDE = "--allow-other-checkpoint (allow_other_checkpoint=True in Python)"
_FAISS_PREFIX = re.compile(r"^Error in .*? at \S+:\d+: (Error: '.*?' failed: )?")


def import_faiss() -> Any:
    """The `faiss` module, or an `ImportError` saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError("EntityIndex searches with FAISS: pip install 'm3el-hf[index]' (faiss-cpu).") from None
    return faiss


def encoder_identity(model: Any, mention_template: str, entity_template: str) -> dict[str, Any]:
    """What makes `model`'s embeddings what they are, as ``index.json`` records it.

    ``weights`` is the SHA-256 of its state dict (each tensor's name, dtype, shape and bytes, in name order): the
    same weights give the same fingerprint whatever folder or Hub id they were loaded from.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    config = model.config
    return {
        "checkpoint": str(getattr(model, "name_or_path", "") or ""),
        "dimension": int(config.projection_dim),
        "weights": f"sha256:{digest.hexdigest()}",
        "mention_template": mention_template,
        "entity_template": entity_template,
        "fusion": getattr(config, "fusion", "mean"),
        "fusion_text_weight": float(getattr(config, "fusion_text_weight", 0.5)),
    }


def check_encoder(built: Mapping[str, Any], current: Mapping[str, Any], index: str, allow_other: bool = False) -> None:
    """Refuse to search `index` (as messages name it), built by the encoder `built`, with the encoder `current`.

    Another width is always refused; other weights, templates or fusion unless `allow_other` (then logged).
    """
    model = current["checkpoint"] or "this model"
    if built["dimension"] != current["dimension"]:
        raise ValueError(
            f"{index} holds {built['dimension']}-dimensional embeddings made by {built['checkpoint']!r}, but "
            f"{model} embeds in {current['dimension']} dimensions: build an index with it (m3el-hf index build "
            f"--model {model} ...)."
        )
    differences = [
        _difference(key, built.get(key), current[key]) for key in ENCODER_KEYS if built.get(key) != current[key]
    ]
    if not differences:
        return
    message = f"{index} was built by {built['checkpoint']!r}, not by {model!r} ({'; '.join(differences)})"
    if allow_other:
        logger.warning("%s; linking with it anyway, as asked.", message)
        return
    raise ValueError(
        f"{message}: scores from two encoders do not compare. Build an index with this model, or pass {_OVERRIDE} "
        "to use it anyway."
    )


def _difference(key: str, built: Any, current: Any) -> str:
    if key == "weights":
        return f"weights {str(built)[:19]}… against {str(current)[:19]}…"
    return f"{key} {built!r} against {current!r}"


def check_factory(factory: str, dimension: int, entities: int) -> Any:
    """Refuse a FAISS factory string that FAISS cannot build for `dimension`, or that needs more training points
    than the `entities` to index, before anything is embedded; returns the empty index it built."""
    module = import_faiss()
    try:
        index = module.index_factory(dimension, factory, module.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(
            f"--factory {factory!r}: FAISS cannot build it for {dimension}-dimensional embeddings "
            f"({faiss_reason(error)}); e.g. Flat (exact), HNSW32 or IVF16,Flat."
        ) from None
    needed = _training_points(module, index)
    if entities < needed:
        raise ValueError(
            f"--factory {factory!r} needs at least {needed:,} entities to train on, but there are {entities:,} to "
            f"index; use {_fitting_factories(entities)}."
        )
    return index


def faiss_reason(error: RuntimeError) -> str:
    """FAISS's complaint in an error it raised, without the C++ function and source line before it."""
    return _FAISS_PREFIX.sub("", str(error).strip().splitlines()[0]) if str(error).strip() else "no reason given"


def _training_points(module: Any, index: Any) -> int:
    """The fewest vectors that train `index`: its coarse quantizer's lists, its product quantizer's centroids."""
    if index.is_trained:
        return 0
    index = module.downcast_index(index)
    if isinstance(index, module.IndexPreTransform):
        index = module.downcast_index(index.index)
    needed = 1
    if isinstance(index, module.IndexIVF):
        needed = index.nlist
    pq = getattr(index, "pq", None)
    return max(needed, pq.ksub) if pq is not None else needed


def _fitting_factories(entities: int) -> str:
    lists = min(int(math.sqrt(entities)), entities // 39)  # FAISS wants ~39 training points per list
    ivf = f", IVF{lists},Flat" if lists >= 2 else ""
    return f"Flat (exact), HNSW32 (needs no training){ivf}"


def count_embeddable(kb: Any, modality: str, what: str) -> int:
    """How many entities of `kb` (a `datasets.Dataset`) `modality` can embed; refuses a modality none can serve."""
    total = kb.num_rows
    if modality == "T":
        return total
    with_image = 0
    if "image" in kb.column_names:
        for table in kb.select_columns(["image"]).with_format("arrow").iter(batch_size=4096):
            with_image += table.num_rows - table.column(0).null_count
    if with_image == 0 and total:
        raise ValueError(
            f"--modality {modality} needs entity images, but none of the {total:,} entities of {what} has one; "
            "--modality T (name and description) serves all of them."
        )
    return with_image
