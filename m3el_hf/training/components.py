"""What a CLIP_ND run is built from: the model (LoRA adapters optional), the data loaders, optimizer and schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import get_scheduler

from ..data.features import KB_SPLIT
from ..data.loading import load_topic_splits
from ..modeling.collator import M3ELCollator, lazy_images
from ..modeling.modeling_clipnd import CLIPNDModel
from .config import TrainConfig

__all__ = [
    "LOGIT_SCALE_FILE",
    "build_dataloaders",
    "build_model",
    "build_optimizer_and_scheduler",
    "load_adapter",
    "save_adapter",
    "validation_kb",
]


LOGIT_SCALE_FILE = "logit_scale.safetensors"


_PROJECTIONS = ["visual_projection", "text_projection"]


def build_model(config: TrainConfig) -> CLIPNDModel | PeftModel:
    """CLIP_ND from `config.model` with the run's MEL settings, wrapped with LoRA adapters when `config.lora`."""
    model = CLIPNDModel.from_pretrained(
        config.model, augment_description=config.augment_description, hard_negatives=config.hard_negatives
    )
    if not config.lora:
        return model
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        modules_to_save=_PROJECTIONS,
    )
    model = get_peft_model(model, lora_config)
    # `logit_scale` is a bare parameter: peft freezes it and `modules_to_save` only takes modules (it silently
    # ignores the name). Keep it trainable: `save_state` and the merged export hold the full state dict, so it
    # is saved there; `save_adapter` writes it next to the adapter.
    model.get_base_model().logit_scale.requires_grad_(True)
    return model


def save_adapter(model: PeftModel, directory: str | Path) -> Path:
    """Save a LoRA model's adapter and its trained `logit_scale` (which peft leaves out) to `directory`."""
    directory = Path(directory)
    model.save_pretrained(directory)
    save_file(
        {"logit_scale": model.get_base_model().logit_scale.detach().cpu().contiguous()}, directory / LOGIT_SCALE_FILE
    )
    return directory


def load_adapter(base_model: CLIPNDModel, directory: str | Path, is_trainable: bool = False) -> PeftModel:
    """Load what [`save_adapter`] wrote onto `base_model` (a CLIP_ND model of the same base checkpoint)."""
    model = PeftModel.from_pretrained(base_model, directory, is_trainable=is_trainable)
    logit_scale = load_file(Path(directory) / LOGIT_SCALE_FILE)["logit_scale"]
    with torch.no_grad():
        model.get_base_model().logit_scale.copy_(logit_scale)
    model.get_base_model().logit_scale.requires_grad_(is_trainable)
    return model


def _load_split(config: TrainConfig, split: str) -> datasets.Dataset:
    parts = list(load_topic_splits(config.data, config.topics, split).values())
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def build_dataloaders(config: TrainConfig, collator: M3ELCollator) -> tuple[DataLoader, datasets.Dataset | None]:
    """The training DataLoader (topics concatenated, seeded shuffle) and the validation dataset (or None).

    This is the seam tests patch to train on other data.
    """
    # Undecoded images: the collator decodes only those its drawn tasks use (the gold's, the negatives').
    train_data = lazy_images(_load_split(config, "train"))
    loader = DataLoader(
        train_data,
        batch_size=config.per_device_batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=collator,
        num_workers=config.num_workers,
        # Not persistent_workers: each epoch's workers must copy the collator after its epoch is set.
        pin_memory=torch.cuda.is_available(),
    )
    if config.eval_split is None:
        return loader, None
    eval_data = _load_split(config, config.eval_split)
    if config.eval_max_instances is not None and config.eval_max_instances < len(eval_data):
        eval_data = eval_data.shuffle(seed=config.seed).select(range(config.eval_max_instances))
    return loader, eval_data


def validation_kb(config: TrainConfig, eval_data: datasets.Dataset | None) -> datasets.Dataset | None:
    """The knowledge base of the run's topics when no validation row has a candidate list (each holds its gold
    alone, as ``prepare --format mimic`` writes them, where ranking the candidates would score 100%): validation
    then ranks the whole KB, as ``evaluate --protocol kb`` scores such data. None otherwise."""
    # The whole table's longest list, a selection's mapping aside: a selection of gold-only lists is gold-only too.
    if eval_data is None or pc.max(pc.list_value_length(eval_data.data.column("candidates"))).as_py() != 1:
        return None
    parts = [datasets.load_dataset(config.data, f"{topic}-kb", split=KB_SPLIT) for topic in config.topics]
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def build_optimizer_and_scheduler(
    model: torch.nn.Module, config: TrainConfig, num_updates: int, num_processes: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on biases, norms and `logit_scale`: every parameter under 2-D) and the LR schedule.

    Args:
        num_updates (`int`): Optimizer updates of the run.
        num_processes (`int`):
            A prepared scheduler steps once per process per update (accelerate's convention), so the schedule
            is stretched by this factor.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates every tensor in one call: 6x faster than the per-tensor loop for the tiny model on
    # a CPU, and the usual choice on GPUs.
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=round(config.warmup_ratio * num_updates) * num_processes,
        num_training_steps=num_updates * num_processes,
    )
    return optimizer, scheduler
