"""The symmetric mention ↔ entity InfoNCE loss of CLIP_ND, exact under data parallelism."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveMELLoss", "GatherFn", "GatheredRows"]


class GatheredRows(NamedTuple):
    """What a gather function returns.

    Args:
        tensors (`list[torch.Tensor]`):
            Each input concatenated over ranks along dim 0 in rank order, padding removed.
        offset (`int`):
            Number of rows the earlier ranks contributed: this rank's rows start there.
        world_size (`int`):
            Number of ranks whose gradients DDP averages.
    """

    tensors: list[Tensor]
    offset: int
    world_size: int


def _all_gather_rows(*tensors: Tensor) -> GatheredRows:
    """All-gathers tensors sharing a dim 0 whose size may differ per rank, with autograd.

    Every collective of the loss is here.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return GatheredRows(list(tensors), 0, 1)
    # In torch 2.13 `all_gather_single` carries autograd (`all_gather_single_autograd` is an alias), works on
    # gloo and does not warn, unlike `all_gather_tensor_autograd` and `torch.distributed.nn.functional
    # .all_gather`. Its backward is a reduce-scatter *sum*: each rank receives the gradient of every rank's
    # loss w.r.t. its own rows. `accelerator.gather` has no grad_fn and would drop those cross-rank terms.
    from torch.distributed._functional_collectives import all_gather_single

    group, world_size = dist.group.WORLD, dist.get_world_size()
    device, n_local = tensors[0].device, tensors[0].shape[0]
    sizes = all_gather_single(torch.tensor([n_local], device=device), 0, group).tolist()
    # all_gather needs equal shapes: pad every rank to the largest, then keep rank r's first sizes[r] rows.
    n_max = max(sizes)
    keep = torch.cat([torch.arange(n, device=device) + r * n_max for r, n in enumerate(sizes)])
    gathered = []
    for t in tensors:
        padded = torch.cat([t, t.new_zeros((n_max - n_local, *t.shape[1:]))])
        gathered.append(all_gather_single(padded, 0, group).index_select(0, keep))
    return GatheredRows(gathered, sum(sizes[: dist.get_rank()]), world_size)


GatherFn = Callable[..., GatheredRows]
"""Signature of `ContrastiveMELLoss`'s `gather_fn`: tensors with a common dim 0 in, `GatheredRows` out."""


class ContrastiveMELLoss(nn.Module):
    """Symmetric InfoNCE between mentions and entities, over the global batch when run data-parallel.

    Mention → entity: each mention against every entity of the global batch (gold entities and hard
    negatives). Entity → mention: each mention's gold entity against every mention of the global batch.
    The loss is the mean of both cross-entropies over the global mentions. Under DDP each rank computes only
    its own mentions' terms, scaled so that DDP's gradient averaging yields exactly the single-process
    gradient of the concatenated batch. The returned value is therefore rank-local; its mean over ranks
    (e.g. `accelerator.reduce(loss, "mean")`) is the global loss.

    Args:
        mask_duplicate_qids (`bool`, *optional*, defaults to `True`):
            Do not treat an entity (resp. mention) with the same gold Qid as a negative: two mentions of
            one entity in a batch must not push each other away.
        gather_fn (`Callable[..., GatheredRows]`, *optional*):
            Gathers tensors over ranks with autograd. Defaults to the `torch.distributed` all-gather (the
            identity when not distributed); tests pass a fake to simulate ranks without a process group.

    >>> loss_fn = ContrastiveMELLoss()
    >>> m, e = torch.eye(2), torch.eye(2)
    >>> ids = torch.tensor([0, 1])
    >>> round(loss_fn(m, e, ids, ids, ids, torch.tensor(100.0)).item(), 4)
    0.0
    """

    def __init__(self, mask_duplicate_qids: bool = True, gather_fn: GatherFn | None = None) -> None:
        super().__init__()
        self.mask_duplicate_qids = mask_duplicate_qids
        self.gather_fn = gather_fn or _all_gather_rows

    def forward(
        self,
        mention_embeds: Tensor,
        entity_embeds: Tensor,
        labels: Tensor,
        mention_qids: Tensor,
        entity_qids: Tensor,
        logit_scale: Tensor,
    ) -> Tensor:
        """Computes the loss of this rank's mentions.

        Args:
            mention_embeds (`torch.Tensor` of shape `(B, D)`): This rank's mention embeddings.
            entity_embeds (`torch.Tensor` of shape `(E, D)`): This rank's entity embeddings, `E >= B`.
            labels (`torch.LongTensor` of shape `(B,)`): Row of each mention's gold entity in `entity_embeds`.
            mention_qids (`torch.LongTensor` of shape `(B,)`):
                Gold Qid of each mention, equal to `entity_qids[labels]` (not checked here, which would read them
                back from the device; see `batch_checks.check_gold_qids`).
            entity_qids (`torch.LongTensor` of shape `(E,)`): Qid of each entity row.
            logit_scale (`torch.Tensor`): Scalar multiplier of the similarities (already exponentiated).

        Returns:
            `torch.Tensor`: A scalar; see the class docstring for its meaning under DDP.
        """
        mentions = self.gather_fn(mention_embeds, mention_qids)
        (all_mentions, all_mention_qids), mention_offset, world_size = mentions
        (all_entities, all_entity_qids), entity_offset, _ = self.gather_fn(entity_embeds, entity_qids)
        if len(all_mentions) == 0:
            # The collator dropped every example of the step: a zero that stays in the graph, so that
            # backward (and DDP's gradient all-reduce) still runs on every rank.
            return (mention_embeds.sum() + entity_embeds.sum() + logit_scale) * 0.0

        # Rows are this rank's own (un-gathered) tensors, columns the gathered global ones; a row's target
        # is its global column, hence the per-rank offsets. Gradient w.r.t. this rank's embeddings arrives
        # through both paths: directly from its rows, and, via the all-gather's reduce-scatter backward,
        # from every rank's columns.
        m2e = logit_scale * mention_embeds @ all_entities.T
        m2e_targets = labels + entity_offset
        e2m = logit_scale * entity_embeds[labels] @ all_mentions.T
        e2m_targets = torch.arange(len(labels), device=labels.device) + mention_offset
        if self.mask_duplicate_qids:
            m2e = _mask_same_qid(m2e, mention_qids, all_entity_qids, m2e_targets)
            e2m = _mask_same_qid(e2m, mention_qids, all_mention_qids, e2m_targets)
        local_sum = F.cross_entropy(m2e, m2e_targets, reduction="sum") + F.cross_entropy(
            e2m, e2m_targets, reduction="sum"
        )
        # The global loss is sum_over_ranks(local_sum) / (2 * N). DDP *averages* parameter gradients over
        # ranks, i.e. divides their sum by world_size, so each rank returns world_size times its share.
        return local_sum * world_size / (2 * len(all_mentions))


def _mask_same_qid(logits: Tensor, row_qids: Tensor, col_qids: Tensor, targets: Tensor) -> Tensor:
    """Sets to -inf the logits of columns sharing the row's Qid, except the target column."""
    same = row_qids[:, None] == col_qids[None, :]
    same[torch.arange(len(targets), device=targets.device), targets] = False
    # -inf drops the column from the softmax exactly; the target stays finite, so no row is all -inf.
    return logits.masked_fill(same, float("-inf"))
