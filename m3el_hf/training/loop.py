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

import copy
import gc
import math
import os
import shutil
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, set_seed
from peft import PeftModel
from torch.utils.data import DataLoader

from ..atomic import refuse_used_folder
from ..data.loading import resolve_topics
from ..evaluation.evaluator import evaluate_model
from ..json_files import read_json
from ..locations import check_checkpoint, check_prepared
from ..modeling.collator import M3ELCollator
from ..modeling.processing import load_processor
from ..progress import progress as progress_bar
from .checkpoints import (
    Run,
    TrainingState,
    export,
    resolve_resume,
    save_checkpoint,
    training_summary,
    validation_protocol,
)
from .components import build_dataloaders, build_model, build_optimizer_and_scheduler, save_adapter, validation_kb
from .config import SUMMARY_NAME, TrainConfig

__all__ = [
    "evaluate_and_select",
    "run_train",
    "train",
    "train_one_epoch",
    "training_report",
    "training_step",
]

logger = get_logger(__name__)


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
    counts = (
        batch["labels"].numel(),
        batch["num_dropped"],
        batch["num_dropped_negatives"],
        batch["num_dropped_leaked"],
    )
    return torch.stack([loss.float(), *(torch.as_tensor(c, dtype=torch.float32, device=loss.device) for c in counts)])


def train_one_epoch(run: Run, loader: DataLoader) -> None:
    """Run micro-batches of one epoch until it ends or the run reaches `num_updates`."""
    config, accelerator, state = run.config, run.accelerator, run.state
    run.model.train()
    stats: list[torch.Tensor] = []
    for batch in loader:
        batch = run.collator.normalize_pixels(batch)  # uint8 images became float32 on the device
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
        state.mentions, state.dropped, state.dropped_negatives, state.dropped_leaked = (
            state.mentions + round(total[1]),
            state.dropped + round(total[2]),
            state.dropped_negatives + round(total[3]),
            state.dropped_leaked + round(total[4]),
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


def evaluate_and_select(run: Run) -> float | None:
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
        summary = accelerator.on_main_process(training_summary)(run, time.perf_counter() - run.started)
        accelerator.on_main_process(export)(
            model, run.tokenizer, run.image_processor, run.config.output_dir / "best", summary
        )
    accelerator.log({"eval/mean_accuracy": score}, step=state.step)
    logger.info("step %d: validation mean accuracy %.4f (best %.4f)", state.step, score, state.best_score)
    accelerator.wait_for_everyone()
    run.model.train()
    run.validation_seconds += time.perf_counter() - started
    return score


def _validate(run: Run, model: torch.nn.Module) -> float:
    protocol = validation_protocol(run)
    model.eval()
    with torch.no_grad(), run.accelerator.autocast():
        result = evaluate_model(
            model,
            run.tokenizer,
            run.image_processor,
            run.eval_data,
            kb=run.eval_kb,
            protocols=(protocol,),
            tasks=run.config.tasks,
            model_name=Path(run.config.output_dir).name,
            checkpoint=f"step-{run.state.step}",
            split=run.config.eval_split,
            batch_size=2 * run.config.per_device_batch_size,
            progress=False,
        )
    return result.mean_accuracy(protocol)


def _hparams(config: TrainConfig) -> dict[str, Any]:
    """The options as tracker hyperparameters (TensorBoard takes only scalars and strings)."""
    return {
        name: ",".join(map(str, value)) if isinstance(value, list) else "none" if value is None else value
        for name, value in config.to_dict().items()
    }


def _setup(config: TrainConfig, accelerator: Accelerator) -> tuple[Run, DataLoader]:
    """Build and prepare the model, data, optimizer and schedule; return them with the prepared train loader."""
    model = build_model(config)
    tokenizer, image_processor = load_processor(config.model)
    # uint8 images from the workers (a quarter of the bytes), made float32 on the device by the loop.
    collator = M3ELCollator.from_pretrained(
        model.config,
        tasks=config.tasks,
        seed=config.seed,
        tokenizer=tokenizer,
        image_processor=image_processor,
        drop_leaked=config.drop_leaked,
        uint8_pixels=True,
    )
    with accelerator.main_process_first():
        loader, eval_data = build_dataloaders(config, collator)
        eval_kb = validation_kb(config, eval_data)
    loader = accelerator.prepare(loader)
    num_updates = config.max_steps or config.epochs * math.ceil(len(loader) / config.gradient_accumulation_steps)
    optimizer, scheduler = build_optimizer_and_scheduler(model, config, num_updates, accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    run = Run(
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
        eval_kb=eval_kb,
    )
    return run, loader


def _train_loop(run: Run, loader: DataLoader) -> None:
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


def _finish(run: Run, wall_time: float) -> Path:
    """Export the final model (and the LoRA adapter), then write the summary into the export folder."""
    model = run.accelerator.unwrap_model(run.model)
    final = export(
        model, run.tokenizer, run.image_processor, run.config.output_dir / "final", training_summary(run, wall_time)
    )
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
    seen = state.mentions + state.dropped + state.dropped_leaked
    if state.dropped_leaked:
        logger.info(
            "%d of %d mention views (%.1f%%) were left out because their mention image copies the gold's "
            "(--drop-leaked); counted in %s.",
            state.dropped_leaked,
            seen,
            100 * state.dropped_leaked / max(seen, 1),
            SUMMARY_NAME,
        )
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

    Every run ends: the prepared model, optimizer and data loaders are released before the process group
    is destroyed, also when training fails (`_release`).

    Returns:
        `Path`: The exported model folder, ``output_dir/final``.

    >>> train(TrainConfig.from_yaml(recipe_path("tiny-cpu"), model=..., data=..., output_dir="run"))  # doctest: +SKIP
    """
    started = time.perf_counter()
    check_checkpoint(config.model)
    check_prepared(config.data)
    # The topics the data has, or a one-line refusal of one it lacks; the summary names the resolved ones. Set on
    # a copy, not by dataclasses.replace: that would check the options again and repeat their warnings.
    config = copy.copy(config)
    object.__setattr__(config, "topics", resolve_topics(config.data, config.topics))
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == ("none",) else list(config.report_to),
        project_dir=config.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        # A collective that waits longer than this for a lost process fails instead of hanging the job.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=config.ddp_timeout))],
    )
    try:
        _check_trackers(config, accelerator)
        _claim_output_dir(config, accelerator)
        set_seed(config.seed)
        # Everything prepared lives in the frame of `_prepare_and_train`, gone when it returns.
        return _prepare_and_train(config, accelerator, started)
    except BaseException as error:
        traceback.clear_frames(error.__traceback__)  # the frames of a failed run hold the prepared model
        raise
    finally:
        _release(accelerator)


def _prepare_and_train(config: TrainConfig, accelerator: Accelerator, started: float) -> Path:
    """Set up, resume, train and export; returns ``output_dir/final``."""
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
    with progress_bar(
        desc="Training", total=run.num_updates, unit="update", show=accelerator.is_local_main_process
    ) as run.progress:
        run.progress.update(run.state.step)  # a resumed run starts where it stopped
        _train_loop(run, loader)
    run.loop_seconds = time.perf_counter() - run.loop_started
    _report_drops(run.state)
    accelerator.on_main_process(_finish)(run, time.perf_counter() - started)
    accelerator.wait_for_everyone()
    return config.output_dir / "final"


def _claim_output_dir(config: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse a folder that holds another run, unless resuming it or told to replace it (then empty it)."""
    out = Path(config.output_dir)
    if config.resume_from is None and refuse_used_folder(out, config.overwrite, "--resume-from latest to continue it"):
        if accelerator.is_main_process:
            logger.warning("--overwrite: deleting the run in %s", out)
            shutil.rmtree(out)
        accelerator.wait_for_everyone()


def run_train(config: TrainConfig) -> Path:
    """``m3el-hf train`` and ``trainers/train.py``: train, then print what was written and what to run next."""
    final = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(training_report(final, config))
    return final


def training_report(final: Path, config: TrainConfig) -> str:
    """A few lines on a finished run: where its models are, its updates, scores and speed, the next command."""
    summary = read_json(final / SUMMARY_NAME)
    validation, speed = summary["validation"], summary["throughput"]
    best = final.parent / "best"
    scores = (
        f"validation mean accuracy: last {_score(validation['final_mean_accuracy'])}, best "
        f"{_score(validation['best_mean_accuracy'])} (update {validation['best_step']})"
        if validation["split"]
        else "no validation (--eval-split none)"
    )
    lines = [
        f"Trained {summary['steps']} updates ({summary['epochs']} epochs) in {summary['wall_time_s']:.1f} s, "
        f"{speed['train_mentions_per_second'] or 0:.0f} mentions/s; final loss {summary['losses'][-1]:.4f}.",
        f"  {scores}",
        f"  final model: {final}" + (f"\n  best model:  {best}" if best.is_dir() else ""),
        f"Next: m3el-hf evaluate --model {final} --data {config.data} --output results.json"
        + (" --protocol kb" if validation.get("protocol") == "kb" else ""),
    ]
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _release(accelerator: Accelerator) -> None:
    """Free the prepared objects, then destroy the process group, in that order.

    A DDP model freed after the group is destroyed drops the group's last reference from Python: with gloo,
    the group's destructor then joins its worker thread while holding the GIL, which that thread needs to
    finish, and the process never exits (seen in about 1 of 9 short two-process runs on a loaded machine).
    """
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
