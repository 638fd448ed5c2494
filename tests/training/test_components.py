"""components: the model (LoRA adapters saved, reloaded and merged), the data loaders, the optimizer and scheduler."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import CLIPModel

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.training import components, loop
from m3el_hf.training.checkpoints import export
from m3el_hf.training.components import build_model, load_adapter, save_adapter
from m3el_hf.training.config import TrainConfig


def test_training_steps_lower_the_loss(
    tiny_clip_path: Path, small_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = small_config(tmp_path)
    accelerator = Accelerator()
    model = build_model(config)
    tokenizer, image_processor = load_processor(tiny_clip_path)
    collator = M3ELCollator.from_pretrained(model.config, tokenizer=tokenizer, image_processor=image_processor)
    loader, _ = components.build_dataloaders(config, collator)
    batch = next(iter(loader))
    optimizer, scheduler = components.build_optimizer_and_scheduler(model, config, num_updates=8, num_processes=1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    losses = [loop.training_step(accelerator, model, batch, optimizer, scheduler, config) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_lora_adapter_merge_and_logit_scale(
    tiny_clip_path: Path, small_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = small_config(tmp_path, lora=True, lora_r=4)
    model = build_model(config)
    assert model.get_base_model().logit_scale.requires_grad
    torch.manual_seed(0)
    with torch.no_grad():  # untrained LoRA B matrices are zero: make the adapter matter
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
        model.get_base_model().logit_scale.add_(0.5)
    model.eval()
    tokens = load_processor(tiny_clip_path)[0](["john : a film", "paris"], padding=True, return_tensors="pt")
    pixels = torch.rand(2, 3, 32, 32)

    def outputs(m):
        with torch.no_grad():
            return m.encode_text(**tokens), m.encode_image(pixels), m.logit_scale.detach().clone()

    save_adapter(model, tmp_path / "adapter")
    reloaded = load_adapter(CLIPNDModel.from_pretrained(tiny_clip_path), tmp_path / "adapter").eval()
    for a, b in zip(outputs(model), outputs(reloaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    tokenizer, image_processor = load_processor(tiny_clip_path)
    folder = export(model, tokenizer, image_processor, tmp_path / "merged")
    merged = CLIPNDModel.from_pretrained(folder).eval()
    for a, b in zip(outputs(model), outputs(merged), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    stock = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        stock_text = torch.nn.functional.normalize(stock.get_text_features(**tokens).pooler_output)
    torch.testing.assert_close(stock_text, outputs(model)[0], rtol=0, atol=1e-5)
    assert stock.logit_scale.item() == pytest.approx(model.get_base_model().logit_scale.item())
