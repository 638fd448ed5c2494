"""The training step (forward, loss, backward) reads nothing back from the device and compiles to one graph."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from m3el_hf.modeling.modeling_clipnd import CLIPNDModel

aten = torch.ops.aten
# Ops that copy a tensor's values to the host (`.item()`, `bool()`, `int()`, `torch.equal`) or whose output
# shape depends on them: on an accelerator, each one waits for the device.
_READS_BACK = {
    aten._local_scalar_dense,
    aten.is_nonzero,
    aten.equal,
    aten.nonzero,
    aten.bincount,
    aten.masked_select,
    aten.unique_consecutive,
    aten._unique2,
    aten.repeat_interleave,
}
# transformers' CLIP text tower asks whether the padding mask is all ones, to hand sdpa `is_causal` instead of a
# mask (masking_utils._ignore_causal_mask_sdpa): one or two reads per text batch in eager mode, none under
# torch.compile (see the last test).
_TRANSFORMERS_MASK = "transformers/masking_utils.py"


class HostReads(TorchDispatchMode):
    """Records every op that reads tensor values back to the host, with the file and line that called it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        boolean_index = func.overloadpacket in (aten.index, aten.index_put, aten.index_put_) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        )
        if func.overloadpacket in _READS_BACK or boolean_index:
            self.reads.append((str(func), _caller()))
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    """The innermost frame outside torch and this file: where the read was asked for."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


@pytest.fixture(scope="module")
def model(tiny_clip_path: Path) -> CLIPNDModel:
    return CLIPNDModel.from_pretrained(tiny_clip_path).train()


def _step(model: CLIPNDModel, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = model(**batch).loss
    return loss, list(torch.autograd.grad(loss, list(model.parameters())))


def test_training_step_reads_nothing_back_from_the_device(model: CLIPNDModel, all_task_batch: dict) -> None:
    with HostReads() as forward:
        loss = model(**all_task_batch).loss
    with HostReads() as backward:
        loss.backward()
    model.zero_grad()
    assert forward.ops > 100 and backward.ops > 100
    assert [read for read in forward.reads if _TRANSFORMERS_MASK not in read[1]] == []
    assert backward.reads == []


def test_host_reads_are_seen_when_the_model_checks_its_inputs(
    model: CLIPNDModel, all_task_batch: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "check_inputs", True)
    with torch.no_grad(), HostReads() as mode:
        model(**all_task_batch)
    ours = {where for _, where in mode.reads if "m3el_hf/modeling/batch_checks.py" in where}
    assert len(ours) >= 5  # range, duplicates and coverage of rows, Qids of the gold rows


@pytest.mark.slow
def test_training_step_compiles_to_one_graph(model: CLIPNDModel, all_task_batch: dict) -> None:
    # fullgraph=True fails on any graph break: a value read back (`.item()`, `.tolist()`, `if tensor`), a
    # data-dependent shape. "aot_eager" traces forward and backward as inductor does, without compiling C++
    # kernels (a minute and a half of CPU for this model on two cores, for the same graphs).
    torch._dynamo.reset()
    try:
        compiled_loss, compiled_grads = _step(torch.compile(model, fullgraph=True, backend="aot_eager"), all_task_batch)
    finally:
        torch._dynamo.reset()
    loss, grads = _step(model, all_task_batch)
    torch.testing.assert_close(compiled_loss, loss, rtol=0, atol=1e-6)
    for compiled, eager in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
