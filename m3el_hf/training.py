"""CLIP_ND training with Accelerate: the same loop on one CPU, one GPU or many processes.

The loop follows accelerate's ``examples/nlp_example.py``: the `Accelerator` does the plumbing (device
placement, DDP, mixed precision, gradient accumulation, checkpoints), and the contrastive loss of
`CLIPNDModel` gathers features across processes itself, so the loop never does. A run folder holds::

    checkpoints/step-{N}/       accelerator.save_state + the progress (rotated, save_total_limit)
    best/                       the model with the best validation mean accuracy
    final/                      the exported model + training_summary.json
    adapter/                    with lora: the LoRA adapter (+ logit_scale.safetensors)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list, set_seed
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import BaseImageProcessor, PreTrainedTokenizerBase, get_scheduler

from .atomic import replace_dir
from .collator import M3ELCollator, lazy_images
from .data import load_topic_splits
from .evaluation import evaluate_model
from .model_card import TRAINING_SUMMARY
from .modeling_clipnd import CLIPNDModel
from .prepare import is_synthetic
from .processing import load_processor
from .training_args import TrainConfig

__all__ = [
    "LOGIT_SCALE_FILE",
    "SUMMARY_NAME",
    "TrainingState",
    "build_dataloaders",
    "build_model",
    "build_optimizer_and_scheduler",
    "evaluate_and_select",
    "export",
    "load_adapter",
    "main",
    "resolve_resume",
    "save_adapter",
    "save_checkpoint",
    "train",
    "train_one_epoch",
    "training_step",
]

logger = get_logger(__name__)

SUMMARY_NAME = TRAINING_SUMMARY
LOGIT_SCALE_FILE = "logit_scale.safetensors"
_PROJECTIONS = ["visual_projection", "text_projection"]


@dataclass
class TrainingState:
    """Where a run is; saved with every checkpoint (`accelerator.register_for_checkpointing`)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    last_score: float | None = None
    last_eval_step: int | None = None
    losses: list[float] = field(default_factory=list)
    # Mention views over all processes: trained on, and dropped by the collator because the drawn task needs an
    # image the instance lacks; hard negatives dropped for the same reason.
    mentions: int = 0
    dropped: int = 0
    dropped_negatives: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


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
    )
    if config.eval_split is None:
        return loader, None
    eval_data = _load_split(config, config.eval_split)
    if config.eval_max_instances is not None and config.eval_max_instances < len(eval_data):
        eval_data = eval_data.shuffle(seed=config.seed).select(range(config.eval_max_instances))
    return loader, eval_data


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


def training_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
) -> torch.Tensor:
    """One micro-batch: forward, backward and (on update boundaries, via accelerate) clip and step.

    Returns the rank-local loss of the micro-batch, detached.
    """
    loss = model(**batch).loss
    accelerator.backward(loss)
    if accelerator.sync_gradients and config.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.detach()


def _micro_batch_stats(loss: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The rank-local loss and the collator's counts of a micro-batch, as one float32 vector to reduce.

    float32 (not 64, which MPS and XLA lack) holds the counts exactly: they stay far below 2**24 per update.
    """
    counts = (batch["labels"].numel(), batch["num_dropped"], batch["num_dropped_negatives"])
    return torch.stack([loss.float(), *(torch.as_tensor(c, dtype=torch.float32, device=loss.device) for c in counts)])


@dataclass
class _Run:
    """What the loop's named steps share: the prepared objects and the run's constants."""

    config: TrainConfig
    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    collator: M3ELCollator
    tokenizer: Any
    image_processor: Any
    eval_data: datasets.Dataset | None
    state: TrainingState
    num_updates: int
    batches_per_epoch: int
    progress: tqdm | None = None
    # This session's timing (not checkpointed): when it and its loop started, the loop's seconds once it ended,
    # the part spent validating, and where the loop began.
    started: float = 0.0
    loop_started: float = 0.0
    loop_seconds: float | None = None
    validation_seconds: float = 0.0
    start_step: int = 0
    start_mentions: int = 0


def train_one_epoch(run: _Run, loader: DataLoader) -> None:
    """Run micro-batches of one epoch until it ends or the run reaches `num_updates`."""
    config, accelerator, state = run.config, run.accelerator, run.state
    run.model.train()
    stats: list[torch.Tensor] = []
    for batch in loader:
        with accelerator.accumulate(run.model):
            loss = training_step(accelerator, run.model, batch, run.optimizer, run.scheduler, config)
        stats.append(_micro_batch_stats(loss, batch))
        state.batches_in_epoch += 1
        if not accelerator.sync_gradients:
            continue
        # One collective per update: the loss is the mean over micro-batches and processes, the counts are sums.
        total = accelerator.reduce(torch.stack(stats).sum(0), "sum").tolist()
        state.step += 1
        state.losses.append(total[0] / (len(stats) * accelerator.num_processes))
        state.mentions, state.dropped, state.dropped_negatives = (
            state.mentions + round(total[1]),
            state.dropped + round(total[2]),
            state.dropped_negatives + round(total[3]),
        )
        stats.clear()
        run.progress.update(1)
        if state.step % config.logging_steps == 0:
            logs = {"train/loss": state.losses[-1], "train/lr": run.scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=state.step)
            run.progress.set_postfix(loss=f"{state.losses[-1]:.4f}")
        if config.eval_every and state.step % config.eval_every == 0:
            evaluate_and_select(run)
        if config.save_every and state.step % config.save_every == 0:
            save_checkpoint(run)
        if state.step >= run.num_updates:
            return


def evaluate_and_select(run: _Run) -> float | None:
    """Validate the current model (main process) and export it to ``best/`` when it beats the best so far.

    Returns the validation mean accuracy over tasks (on every process), or None without a validation split.
    """
    if run.eval_data is None:
        return None
    started = time.perf_counter()
    accelerator, state = run.accelerator, run.state
    model = accelerator.unwrap_model(run.model)
    score = accelerator.on_main_process(_validate)(run, model)
    score = broadcast_object_list([score])[0]
    state.last_score, state.last_eval_step = score, state.step
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step = score, state.step
        # With the summary of this moment: its card then states the steps, losses and score of these weights.
        summary = accelerator.on_main_process(_summary)(run, time.perf_counter() - run.started)
        accelerator.on_main_process(export)(
            model, run.tokenizer, run.image_processor, run.config.output_dir / "best", summary
        )
    accelerator.log({"eval/mean_accuracy": score}, step=state.step)
    logger.info("step %d: validation mean accuracy %.4f (best %.4f)", state.step, score, state.best_score)
    accelerator.wait_for_everyone()
    run.model.train()
    run.validation_seconds += time.perf_counter() - started
    return score


def _validate(run: _Run, model: torch.nn.Module) -> float:
    model.eval()
    with torch.no_grad(), run.accelerator.autocast():
        result = evaluate_model(
            model,
            run.tokenizer,
            run.image_processor,
            run.eval_data,
            tasks=run.config.tasks,
            model_name=Path(run.config.output_dir).name,
            checkpoint=f"step-{run.state.step}",
            split=run.config.eval_split,
            batch_size=2 * run.config.per_device_batch_size,
            progress=False,
        )
    return result.mean_accuracy()


def save_checkpoint(run: _Run) -> Path:
    """`save_state` to ``checkpoints/step-{N}`` (written under a hidden name, then renamed) and rotate."""
    accelerator, root = run.accelerator, run.config.output_dir / "checkpoints"
    final = root / f"step-{run.state.step}"
    partial = root / f".step-{run.state.step}.partial"
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    accelerator.on_main_process(_publish_checkpoint)(partial, final, run.config.save_total_limit)
    accelerator.wait_for_everyone()
    return final


def _checkpoints(root: Path) -> list[Path]:
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _publish_checkpoint(partial: Path, final: Path, limit: int | None) -> None:
    replace_dir(partial, final, overwrite=True)
    for old in _checkpoints(final.parent)[: -limit if limit else 0]:
        shutil.rmtree(old)


def resolve_resume(config: TrainConfig) -> Path | None:
    """The checkpoint folder `config.resume_from` names (``"latest"``: the newest one, None if there is none)."""
    if config.resume_from is None:
        return None
    if config.resume_from == "latest":
        found = _checkpoints(config.output_dir / "checkpoints")
        return found[-1] if found else None
    path = Path(config.resume_from)
    if not (path / "custom_checkpoint_0.pkl").is_file():
        raise FileNotFoundError(
            f"resume_from={config.resume_from!r} is not a checkpoint folder (written by save_state under "
            f"{config.output_dir / 'checkpoints'}); pass such a folder or 'latest'."
        )
    return path


def export(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    directory: str | Path,
    summary: dict[str, Any] | None = None,
) -> Path:
    """Write a self-contained CLIP_ND checkpoint: weights (LoRA merged), config, tokenizer, image processor.

    The folder loads with `CLIPNDModel.from_pretrained`, stock `CLIPModel.from_pretrained` and
    `load_processor`. It is written next to `directory`, with `summary` as ``training_summary.json`` when
    given, and renamed into place.
    """
    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        if summary is not None:
            (staging / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, directory, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _summary(run: _Run, wall_time: float) -> dict[str, Any]:
    accelerator, state = run.accelerator, run.state
    device = accelerator.device
    return {
        "config": run.config.to_dict(),
        "steps": state.step,
        "epochs": round(state.epoch + state.batches_in_epoch / run.batches_per_epoch, 4),
        "seed": run.config.seed,
        # Decided here, where `config.data` resolves: a card rendered elsewhere cannot look at that folder.
        "synthetic_data": is_synthetic(run.config.data),
        "hardware": {
            "device_type": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "num_processes": accelerator.num_processes,
            "cpu_threads_per_process": torch.get_num_threads(),
            "mixed_precision": accelerator.mixed_precision,
        },
        "validation": {
            "split": run.config.eval_split,
            "final_mean_accuracy": state.last_score,
            "best_mean_accuracy": state.best_score,
            "best_step": state.best_step,
        },
        "mentions": {
            "trained": state.mentions,
            "dropped_missing_image": state.dropped,
            "dropped_hard_negatives": state.dropped_negatives,
        },
        "throughput": _throughput(run),
        "wall_time_s": round(wall_time, 3),
        "losses": state.losses,
    }


def _throughput(run: _Run) -> dict[str, float | None]:
    """This session's training speed, validation time excluded (checkpointing included, as in `Trainer`)."""
    loop = run.loop_seconds if run.loop_seconds is not None else time.perf_counter() - run.loop_started
    seconds = loop - run.validation_seconds
    steps, mentions = run.state.step - run.start_step, run.state.mentions - run.start_mentions
    return {
        "train_runtime_s": round(seconds, 3),
        "validation_runtime_s": round(run.validation_seconds, 3),
        "train_steps_per_second": round(steps / seconds, 3) if seconds > 0 else None,
        "train_mentions_per_second": round(mentions / seconds, 3) if seconds > 0 else None,
    }


def _hparams(config: TrainConfig) -> dict[str, Any]:
    """The options as tracker hyperparameters (TensorBoard takes only scalars and strings)."""
    return {
        name: ",".join(map(str, value)) if isinstance(value, list) else "none" if value is None else value
        for name, value in config.to_dict().items()
    }


def _setup(config: TrainConfig, accelerator: Accelerator) -> tuple[_Run, DataLoader]:
    """Build and prepare the model, data, optimizer and schedule; return them with the prepared train loader."""
    model = build_model(config)
    tokenizer, image_processor = load_processor(config.model)
    collator = M3ELCollator.from_pretrained(
        model.config, tasks=config.tasks, seed=config.seed, tokenizer=tokenizer, image_processor=image_processor
    )
    with accelerator.main_process_first():
        loader, eval_data = build_dataloaders(config, collator)
    loader = accelerator.prepare(loader)
    num_updates = config.max_steps or config.epochs * math.ceil(len(loader) / config.gradient_accumulation_steps)
    optimizer, scheduler = build_optimizer_and_scheduler(model, config, num_updates, accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    run = _Run(
        config,
        accelerator,
        model,
        optimizer,
        scheduler,
        collator,
        tokenizer,
        image_processor,
        eval_data,
        state,
        num_updates,
        len(loader),
    )
    return run, loader


def _train_loop(run: _Run, loader: DataLoader) -> None:
    """Epochs until `num_updates`, each resuming where the state says (task draws, data order, position)."""
    config, accelerator, state = run.config, run.accelerator, run.state
    while state.step < run.num_updates:
        run.collator.epoch = state.epoch
        loader.set_epoch(state.epoch)
        skip = state.batches_in_epoch
        train_one_epoch(run, accelerator.skip_first_batches(loader, skip) if skip else loader)
        if state.batches_in_epoch < run.batches_per_epoch:
            break
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        if not config.eval_every:
            evaluate_and_select(run)
        if not config.save_every:
            save_checkpoint(run)
    if state.last_eval_step != state.step:
        evaluate_and_select(run)


def _finish(run: _Run, wall_time: float) -> Path:
    """Export the final model (and the LoRA adapter), then write the summary into the export folder."""
    model = run.accelerator.unwrap_model(run.model)
    final = export(model, run.tokenizer, run.image_processor, run.config.output_dir / "final", _summary(run, wall_time))
    if isinstance(model, PeftModel):
        save_adapter(model, run.config.output_dir / "adapter")
    return final


def _check_trackers(config: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse to train when a tracker `report_to` names is not installed: Accelerate would silently drop it."""
    active = {str(tracker) for tracker in accelerator.log_with}
    missing = sorted(set(config.report_to) - {"none", "all"} - active)
    if missing:
        raise ValueError(
            f"report_to={list(config.report_to)}: {', '.join(missing)} is not installed here, so nothing would be "
            f"logged to it. Install it (pip install {' '.join(missing)}) or pass --report-to none."
        )


def _report_drops(state: TrainingState) -> None:
    seen = state.mentions + state.dropped
    if state.dropped or state.dropped_negatives:
        logger.warning(
            "%d of %d mention views (%.1f%%) and %d hard negatives were dropped because their drawn task needs an "
            "image the instance lacks; counted in %s.",
            state.dropped,
            seen,
            100 * state.dropped / max(seen, 1),
            state.dropped_negatives,
            SUMMARY_NAME,
        )


def train(config: TrainConfig) -> Path:
    """Train CLIP_ND as `config` says, on whatever `accelerate launch` (or a plain process) provides.

    Returns:
        `Path`: The exported model folder, ``output_dir/final``.

    >>> train(TrainConfig.from_yaml(recipe_path("tiny-cpu"), model=..., data=..., output_dir="run"))  # doctest: +SKIP
    """
    started = time.perf_counter()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == ("none",) else list(config.report_to),
        project_dir=config.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    _check_trackers(config, accelerator)
    set_seed(config.seed)
    run, loader = _setup(config, accelerator)
    checkpoint = resolve_resume(config)
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        logger.info("Resumed from %s at update %d (epoch %d)", checkpoint, run.state.step, run.state.epoch)
    elif config.resume_from == "latest":
        logger.info("No checkpoint under %s: starting from scratch.", config.output_dir / "checkpoints")
    accelerator.init_trackers("clipnd", config=_hparams(config))
    logger.info(
        "%d updates of %d mentions (%d processes × %d × %d accumulation)",
        run.num_updates,
        config.per_device_batch_size * accelerator.num_processes * config.gradient_accumulation_steps,
        accelerator.num_processes,
        config.per_device_batch_size,
        config.gradient_accumulation_steps,
    )
    run.start_step, run.start_mentions = run.state.step, run.state.mentions
    run.started, run.loop_started = started, time.perf_counter()
    with tqdm(
        total=run.num_updates, initial=run.state.step, desc="training", disable=not accelerator.is_local_main_process
    ) as run.progress:
        _train_loop(run, loader)
    run.loop_seconds = time.perf_counter() - run.loop_started
    _report_drops(run.state)
    final = config.output_dir / "final"
    accelerator.on_main_process(_finish)(run, time.perf_counter() - started)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``accelerate launch trainers/train.py`` (and ``-m m3el_hf.trainers.train``)."""
    parser = TrainConfig.add_arguments(
        argparse.ArgumentParser(prog="train.py", description="Train CLIP_ND on M³EL with Accelerate.")
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_namespace(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .cli import user_errors

    try:
        train(config)
    except user_errors() as error:  # bad data or options found once running: one clear line, as `m3el-hf train`
        logger.debug("train.py failed", exc_info=True)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
