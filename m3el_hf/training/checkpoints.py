"""A run's state and what it writes: `TrainingState`, rotated checkpoints, resumption, exports and their summary."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from peft import PeftModel
from transformers import BaseImageProcessor, CLIPProcessor, PreTrainedTokenizerBase

from ..atomic import replace_dir
from ..data.prepare import is_synthetic
from ..json_files import write_json
from ..locations import is_hub_id
from ..modeling.collator import M3ELCollator
from ..progress import library_bars_off
from .config import PATH_OPTIONS, SUMMARY_NAME, TrainConfig

__all__ = ["Run", "TrainingState", "export", "hub_id", "resolve_resume", "save_checkpoint", "training_summary"]


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
    # image the instance lacks; hard negatives dropped for the same reason; views left out as leaked.
    mentions: int = 0
    dropped: int = 0
    dropped_negatives: int = 0
    dropped_leaked: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class Run:
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
    progress: Any = None  # the training bar
    eval_kb: datasets.Dataset | None = None  # validation ranks this whole KB when the data has no candidate lists
    # This session's timing (not checkpointed): when it and its loop started, the loop's seconds once it ended,
    # the part spent validating, and where the loop began.
    started: float = 0.0
    loop_started: float = 0.0
    loop_seconds: float | None = None
    validation_seconds: float = 0.0
    start_step: int = 0
    start_mentions: int = 0


def save_checkpoint(run: Run) -> Path:
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

    The folder is a stock CLIP checkpoint (``model_type: clip``) that every Auto class, `AutoProcessor` and the
    zero-shot-image-classification pipeline load; `CLIPNDModel.from_pretrained` and `load_processor` also restore
    the entity-linking settings. It is written next to `directory`, with `summary` as ``training_summary.json`` when
    given, and renamed into place.
    """
    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        # No "Writing model shards" bar: an export takes a moment, and a run exports at every new best score.
        with library_bars_off("transformers"):
            model.save_pretrained(staging)
        # processor_config.json, tokenizer files and the image processor, as CLIPProcessor.save_pretrained writes
        # them: AutoProcessor and the zero-shot-image-classification pipeline load the folder as it is.
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(staging)
        if summary is not None:
            write_json(staging / SUMMARY_NAME, summary)
        replace_dir(staging, directory, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def hub_id(value: str | None) -> str | None:
    """`value` if it names a Hub repo: no file or folder of that name exists here, and it reads as a repo id.

    >>> hub_id("openai/clip-vit-base-patch32")
    'openai/clip-vit-base-patch32'
    """
    if value is None or os.path.isabs(value) or Path(value).exists() or not is_hub_id(value, owner=False):
        return None
    return value


def _public_options(config: TrainConfig) -> dict[str, Any]:
    options = config.to_dict()
    for key in PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and hub_id(value) is None:
            options[key] = PurePath(value).name
    return options


def training_summary(run: Run, wall_time: float) -> dict[str, Any]:
    """What ``training_summary.json`` holds: the options, the progress, validation scores, speed, hardware."""
    accelerator, state = run.accelerator, run.state
    device = accelerator.device
    return {
        # No local path: the summary is published with the model. Hub ids are recorded as such, decided here,
        # where the paths resolve (a card rendered from another folder could not tell a path from an id).
        "config": _public_options(run.config),
        "base_model": hub_id(run.config.model),
        "dataset": hub_id(run.config.data),
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
            "protocol": validation_protocol(run),
            "final_mean_accuracy": state.last_score,
            "best_mean_accuracy": state.best_score,
            "best_step": state.best_step,
        },
        "mentions": {
            "trained": state.mentions,
            "dropped_missing_image": state.dropped,
            "dropped_hard_negatives": state.dropped_negatives,
            "dropped_leaked": state.dropped_leaked,
        },
        "throughput": _throughput(run),
        "wall_time_s": round(wall_time, 3),
        "losses": state.losses,
    }


def validation_protocol(run: Run) -> str | None:
    """How the run validates: ``kb`` (rank the whole KB) on data without candidate lists, else ``candidates``."""
    if run.config.eval_split is None:
        return None
    return "candidates" if run.eval_kb is None else "kb"


def _throughput(run: Run) -> dict[str, float | None]:
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
