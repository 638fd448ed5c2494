"""ContrastiveMELLoss: brute-force reference, a simulated 2-rank gather, and a real 2-process DDP run."""

from __future__ import annotations

import gc
import math
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from m3el_hf.modeling.loss import ContrastiveMELLoss, GatheredRows


def reference_loss(m: Tensor, e: Tensor, labels: Tensor, mq: Tensor, eq: Tensor, scale: Tensor, mask: bool):
    """The single-process loss, one mention at a time, with masked logits dropped rather than set to -inf."""
    terms = []
    for i in range(len(m)):
        gold = int(labels[i])
        cols = [j for j in range(len(e)) if not (mask and eq[j] == mq[i] and j != gold)]
        logits = torch.stack([scale * m[i] @ e[j] for j in cols])
        terms.append(F.cross_entropy(logits[None], torch.tensor([cols.index(gold)])))
        cols = [k for k in range(len(m)) if not (mask and mq[k] == mq[i] and k != i)]
        logits = torch.stack([scale * e[gold] @ m[k] for k in cols])
        terms.append(F.cross_entropy(logits[None], torch.tensor([cols.index(i)])))
    return torch.stack(terms).sum() / (2 * len(m))


def random_batch(n_mentions: int, n_negatives: int, qids: list[int] | None = None, seed: int = 0):
    """Mentions with their gold entities in shuffled rows, plus hard negatives with fresh Qids."""
    g = torch.Generator().manual_seed(seed)
    n_entities = n_mentions + n_negatives
    m = torch.randn(n_mentions, 8, generator=g, dtype=torch.float64)
    e = torch.randn(n_entities, 8, generator=g, dtype=torch.float64)
    labels = torch.randperm(n_entities, generator=g)[:n_mentions]
    mq = torch.tensor(qids if qids is not None else range(100, 100 + n_mentions))
    eq = torch.arange(1000, 1000 + n_entities)  # negatives' Qids differ from every gold Qid
    eq[labels] = mq
    return m, e, labels, mq, eq, torch.tensor(3.0, dtype=torch.float64)


@pytest.mark.parametrize("n_negatives", [0, 4])
@pytest.mark.parametrize("mask", [True, False])
def test_matches_reference(n_negatives: int, mask: bool) -> None:
    batch = random_batch(6, n_negatives)
    loss = ContrastiveMELLoss(mask_duplicate_qids=mask)(*batch)
    torch.testing.assert_close(loss, reference_loss(*batch, mask=mask), rtol=0, atol=1e-12)


def test_duplicate_qids_are_masked() -> None:
    # Mentions 0, 2 and 5 share Qid 7, each with its own gold row of that Qid. Mention 4 is then pointed at
    # mention 1's gold row (Qid 8); its former row keeps Qid 8 as a same-entity negative that must be masked.
    batch = list(random_batch(6, 3, qids=[7, 8, 7, 9, 8, 7]))
    batch[2][4] = batch[2][1]
    masked = ContrastiveMELLoss()(*batch)
    unmasked = ContrastiveMELLoss(mask_duplicate_qids=False)(*batch)
    assert not torch.isclose(masked, unmasked)
    torch.testing.assert_close(masked, reference_loss(*batch, mask=True), rtol=0, atol=1e-12)
    torch.testing.assert_close(unmasked, reference_loss(*batch, mask=False), rtol=0, atol=1e-12)


def test_gradients_match_reference() -> None:
    m, e, labels, mq, eq, scale = random_batch(5, 3, qids=[1, 2, 1, 3, 4])
    leaves = [t.requires_grad_() for t in (m, e, scale)]
    grads = torch.autograd.grad(ContrastiveMELLoss()(m, e, labels, mq, eq, scale), leaves)
    expected = torch.autograd.grad(reference_loss(m, e, labels, mq, eq, scale, mask=True), leaves)
    for got, want in zip(grads, expected, strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_aligned_batch_with_large_scale_has_zero_loss() -> None:
    embeds, ids = torch.eye(4), torch.arange(4)
    hard_negative = torch.full((1, 4), -0.5)
    loss = ContrastiveMELLoss()(
        embeds, torch.cat([embeds, hard_negative]), ids, ids, torch.arange(5), torch.tensor(100.0)
    )
    assert loss.item() < 1e-6


# A global batch split unevenly over 2 ranks: 3 and 5 mentions, 4 and 6 entities. The *first* rank is the
# smaller, so its padding sits mid-gather and must be stripped. Duplicates: Qid 10 on both ranks (three
# mentions, three entity rows); rank 1's mentions 3 and 4 share gold row 3; rank 1's hard negative of Qid 14
# is the gold entity of rank 0's mention 0.
SHARDS = [
    {"mention_qids": [14, 10, 15], "labels": [0, 1, 2], "entity_qids": [14, 10, 15, 21]},
    {
        "mention_qids": [10, 11, 10, 12, 12],
        "labels": [0, 1, 2, 3, 3],
        "entity_qids": [10, 11, 10, 12, 20, 14],
    },
]


def shard_tensors(
    mention_inputs: Tensor, entity_inputs: Tensor, rank: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Rank `rank`'s slice of the global inputs and its local labels and Qids."""
    m_start = sum(len(s["labels"]) for s in SHARDS[:rank])
    e_start = sum(len(s["entity_qids"]) for s in SHARDS[:rank])
    shard = SHARDS[rank]
    return (
        mention_inputs[m_start : m_start + len(shard["labels"])],
        entity_inputs[e_start : e_start + len(shard["entity_qids"])],
        torch.tensor(shard["labels"]),
        torch.tensor(shard["mention_qids"]),
        torch.tensor(shard["entity_qids"]),
    )


def global_tensors(mention_inputs: Tensor, entity_inputs: Tensor) -> tuple[Tensor, ...]:
    """The concatenated batch a single process sees: labels offset by the earlier shards' entity counts."""
    labels, offset = [], 0
    for shard in SHARDS:
        labels += [label + offset for label in shard["labels"]]
        offset += len(shard["entity_qids"])
    mq = [q for shard in SHARDS for q in shard["mention_qids"]]
    eq = [q for shard in SHARDS for q in shard["entity_qids"]]
    return mention_inputs, entity_inputs, torch.tensor(labels), torch.tensor(mq), torch.tensor(eq)


def inputs(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    n_mentions = sum(len(s["labels"]) for s in SHARDS)
    n_entities = sum(len(s["entity_qids"]) for s in SHARDS)
    mention_inputs = torch.randn(n_mentions, 6, generator=g, dtype=dtype)
    return mention_inputs, torch.randn(n_entities, 6, generator=g, dtype=dtype)


def test_simulated_ranks_match_single_process() -> None:
    """Two ranks in one process: the fake gather concatenates the shards without detaching.

    Both ranks' losses then live in one graph, so backpropagating their *mean* (DDP's averaging) gives
    the same per-leaf gradient as each rank's autograd all-gather (whose backward sums over ranks).
    """
    m_in, e_in = (t.requires_grad_() for t in inputs(torch.float64))
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    shards = [shard_tensors(m_in, e_in, rank) for rank in range(2)]

    def fake_gather(rank: int):
        def gather(*tensors: Tensor) -> GatheredRows:
            column = 0 if tensors[0] is shards[rank][0] else 1  # mentions or entities
            parts = [(s[column], s[3 + column]) for s in shards]
            offset = sum(len(p[0]) for p in parts[:rank])
            return GatheredRows([torch.cat(ts) for ts in zip(*parts, strict=True)], offset, len(shards))

        return gather

    losses = [
        ContrastiveMELLoss(gather_fn=fake_gather(rank))(m, e, labels, mq, eq, scale)
        for rank, (m, e, labels, mq, eq) in enumerate(shards)
    ]
    grads = torch.autograd.grad(torch.stack(losses).mean(), (m_in, e_in, scale))
    expected_loss = ContrastiveMELLoss()(*global_tensors(m_in, e_in), scale)
    expected = torch.autograd.grad(expected_loss, (m_in, e_in, scale))
    torch.testing.assert_close(torch.stack(losses).mean(), expected_loss, rtol=0, atol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mention_proj = nn.Linear(6, 4)
        self.entity_proj = nn.Linear(6, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, mentions: Tensor, entities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = F.normalize(self.mention_proj(mentions), dim=-1)
        return m, F.normalize(self.entity_proj(entities), dim=-1), self.logit_scale.exp()


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=30)
    )
    try:
        _ddp_step(rank, out_dir)
        # Let every rank's gradient all-reduce finish and its DDP Reducer go away while the process group is
        # still registered: freeing the last reference to a gloo group from Python can deadlock on the GIL
        # (the group's destructor joins a worker thread that needs the GIL to release a finished work item).
        dist.barrier()
        gc.collect()
    finally:
        dist.destroy_process_group()


def _ddp_step(rank: int, out_dir: str) -> None:
    model = nn.parallel.DistributedDataParallel(TinyEncoder())
    m_in, e_in, labels, mq, eq = shard_tensors(*inputs(), rank)
    m, e, scale = model(m_in, e_in)
    loss = ContrastiveMELLoss()(m, e, labels, mq, eq, scale)
    loss.backward()
    grads = {name: p.grad for name, p in model.module.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")
def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    context = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process DDP run did not finish within 120 s")
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]

    model = TinyEncoder()
    m_in, e_in, labels, mq, eq = global_tensors(*inputs())
    m, e, scale = model(m_in, e_in)
    expected_loss = ContrastiveMELLoss()(m, e, labels, mq, eq, scale)
    expected_loss.backward()

    # Each rank returns world_size x its share; their mean is the global loss.
    torch.testing.assert_close(
        torch.stack([r["loss"] for r in results]).mean(), expected_loss.detach(), atol=1e-5, rtol=0
    )
    for name, p in model.named_parameters():
        for r in results:  # DDP leaves the same averaged gradient on every rank
            torch.testing.assert_close(
                r["grads"][name], p.grad, atol=1e-5, rtol=0, msg=lambda s, name=name: f"{name}: {s}"
            )


def test_a_step_whose_examples_were_all_dropped_gives_zero_loss_with_gradients():
    mentions = torch.zeros(0, 4, requires_grad=True)
    entities = torch.zeros(0, 4, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = ContrastiveMELLoss()(mentions, entities, empty, empty, empty, scale)
    loss.backward()
    assert loss.item() == 0.0 and scale.grad.item() == 0.0
