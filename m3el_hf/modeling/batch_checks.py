"""What `M3ELCollator` checks on the host: the rows it reads and the batches it builds.

`CLIPNDModel.forward` does not repeat the batch checks on the accelerator, where reading a row index or a
Qid back is a device-to-host sync that stalls the training step; `CLIPNDModel.check_inputs` turns them on
there too, to debug batches built by hand.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from ..benchmark import is_leak

__all__ = ["check_batch", "check_gold_qids", "check_rows", "gold_candidate_index", "leaked"]


def gold_candidate_index(row: Mapping[str, Any]) -> int:
    """The position of the row's gold candidate, after checking that `label` indexes `candidates`."""
    label, candidates = row["label"], row["candidates"]
    if not isinstance(label, numbers.Integral) or not 0 <= label < len(candidates):
        raise ValueError(
            f"Row {row.get('id')!r}: label {label!r} does not index its {len(candidates)} candidates; "
            "it must be the position of the gold candidate."
        )
    return int(label)


def leaked(row: Mapping[str, Any]) -> bool:
    """Whether the row's mention image copies the gold's (`drop_leaked`); the row must say so."""
    if "mention_image_leak" not in row:
        raise ValueError(
            f"Row {row.get('id')!r} has no 'mention_image_leak' column, which drop_leaked reads; prepare the data "
            "again with this version of m3el-hf, or train without --drop-leaked."
        )
    return is_leak(row["mention_image_leak"])


def check_rows(
    text_rows: torch.Tensor | None, image_rows: torch.Tensor | None, num_rows: int, prefix: str = ""
) -> None:
    """Check the output rows of one side: each in `[0, num_rows)`, none twice per modality, none left empty.

    Args:
        text_rows (`torch.LongTensor` of shape `(Nt,)`, *optional*): Output row of each text.
        image_rows (`torch.LongTensor` of shape `(Ni,)`, *optional*): Output row of each image.
        num_rows (`int`): Number of output rows.
        prefix (`str`, *optional*): Prepended to `text_rows` and `image_rows` in the error messages.

    >>> check_rows(torch.tensor([0, 1]), torch.tensor([1]), num_rows=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: rows [2] have neither a text nor an image; ...
    """
    covered = _row_mask(text_rows, num_rows, f"{prefix}text_rows") | _row_mask(
        image_rows, num_rows, f"{prefix}image_rows"
    )
    if not bool(covered.all()):
        raise ValueError(
            f"rows {(~covered).nonzero().flatten().tolist()} have neither a text nor an image; every output row "
            f"needs an entry in {prefix}text_rows and/or {prefix}image_rows (or lower num_rows)."
        )


def check_gold_qids(labels: torch.Tensor, mention_qids: torch.Tensor, entity_qids: torch.Tensor) -> None:
    """Check that each mention's gold entity row (`labels`) carries the mention's Qid, as the loss assumes."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(entity_qids)):
        raise ValueError(f"`labels` must index the {len(entity_qids)} entity rows, got {labels.tolist()}.")
    if not torch.equal(entity_qids[labels], mention_qids):
        raise ValueError(
            "`mention_qids` must equal `entity_qids[labels]` (a mention's gold entity row carries its "
            f"Qid); got mention_qids={mention_qids.tolist()}, entity_qids[labels]="
            f"{entity_qids[labels].tolist()}. Check that `labels` index this rank's `entity_embeds`."
        )


def check_batch(batch: Mapping[str, Any]) -> None:
    """Check a batch in the layout of `M3ELCollator`: both sides' rows, and the gold rows' Qids."""
    num_rows = {"mention": len(batch["mention_qids"]), "entity": len(batch["entity_qids"])}
    for side, count in num_rows.items():
        check_rows(batch.get(f"{side}_text_rows"), batch.get(f"{side}_image_rows"), count, prefix=f"{side}_")
    check_gold_qids(batch["labels"], batch["mention_qids"], batch["entity_qids"])


def _row_mask(rows: torch.Tensor | None, num_rows: int, name: str) -> torch.Tensor:
    """Boolean `(num_rows,)` mask of the rows in `rows`, after checking they are in range and distinct."""
    if rows is None:
        return torch.zeros(num_rows, dtype=torch.bool)
    rows = rows.cpu()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_rows):
        raise ValueError(f"{name} must lie in [0, {num_rows}), got {rows.tolist()}.")
    counts = torch.bincount(rows, minlength=num_rows)
    if bool((counts > 1).any()):
        raise ValueError(
            f"rows {(counts > 1).nonzero().flatten().tolist()} appear more than once in {name}; "
            "each output row takes at most one text and one image."
        )
    return counts > 0
