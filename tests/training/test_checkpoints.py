"""checkpoints: an exact resume from the latest checkpoint after a kill, rotation, and the exported folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.training import loop
from m3el_hf.training.checkpoints import hub_id
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig
from m3el_hf.training.loop import train


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_weights(
    small_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 69 training rows, micro-batches of 8, accumulation 2: 9 micro-batches and 5 updates per epoch, the last
    # one from a single micro-batch. The run is killed in update 5, after the checkpoint of update 3: it
    # resumes mid-epoch with a partly consumed loader, then crosses into epoch 1 (new order, new task draws).
    options = {"gradient_accumulation_steps": 2, "max_steps": 7, "save_every": 3, "augment_description": False}
    options["num_workers"] = 1  # workers copy the collator per epoch: its epoch must reach them after a resume
    uninterrupted = train(small_config(tmp_path / "a", **options))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    step = loop.training_step
    calls = []

    def dies_at_update_5(*args, **kwargs):
        calls.append(1)
        if len(calls) > 8:
            raise Killed
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "training_step", dies_at_update_5)
    config = small_config(tmp_path / "b", resume_from="latest", **options)
    with pytest.raises(Killed):
        train(config)
    monkeypatch.setattr(loop, "training_step", step)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-3"]
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    resumed = train(config)

    expected, actual = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert max((expected[k] - actual[k]).abs().max().item() for k in expected) <= 1e-6
    summaries = [json.loads((folder / SUMMARY_NAME).read_text()) for folder in (uninterrupted, resumed)]
    assert summaries[0]["losses"] == pytest.approx(summaries[1]["losses"], abs=1e-6)
    assert summaries[0]["mentions"] == summaries[1]["mentions"]  # the counters are checkpointed too
    assert summaries[0]["steps"] == 7 and summaries[0]["losses"][-1] < summaries[0]["losses"][0]

    # The exported folder is self-contained and records the name-only setting.
    model = CLIPNDModel.from_pretrained(resumed)
    assert model.config.augment_description is False and model.config.model_type == "clipnd"
    tokenizer, image_processor = load_processor(resumed)
    assert type(image_processor).__name__ == "CLIPImageProcessorPil" and len(tokenizer) > 500
    assert M3ELCollator.from_pretrained(resumed).augment_description is False
    assert summaries[1]["hardware"]["num_processes"] == 1 and summaries[1]["seed"] == 0


def test_hub_id_is_decided_where_the_paths_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub_id("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32" and hub_id("gpt2") == "gpt2"
    (tmp_path / "openai" / "clip-vit-base-patch32").mkdir(parents=True)
    assert hub_id("openai/clip-vit-base-patch32") is None  # a local folder of that name: local
    assert hub_id(str(tmp_path)) is None and hub_id("runs/x y") is None and hub_id(None) is None
