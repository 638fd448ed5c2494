"""Options of CLIP_ND training (`TrainConfig`), its YAML recipes and its command line; no torch import.

A recipe is a YAML file of `TrainConfig` fields. On the command line, ``--recipe`` loads one and only the
flags actually given override it: dataclass defaults never overwrite recipe values.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..arguments import add_dataclass_arguments, dataclass_from_namespace
from ..locations import SUMMARY_NAME
from ..tasks import TASK_NAMES, check_topics, get_task

__all__ = [
    "LR_SCHEDULERS",
    "PATH_OPTIONS",
    "SUMMARY_NAME",
    "TRACKERS",
    "TrainConfig",
    "available_recipes",
    "recipe_path",
]

logger = logging.getLogger(__name__)

LRScheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "cosine_with_min_lr"
]
LR_SCHEDULERS: tuple[str, ...] = LRScheduler.__args__
# `accelerate.utils.LoggerType` values (kept literal so that this module does not import torch), plus "none".
Tracker = Literal[
    "none", "all", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "aim", "dvclive", "swanlab"
]
TRACKERS: tuple[str, ...] = Tracker.__args__
_ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
_RECIPES = "m3el_hf.trainers"
PATH_OPTIONS = ("model", "data", "output_dir", "resume_from")
"""Options that may name local paths: the training summary keeps only their last part (Hub ids stay whole)."""


@dataclass(frozen=True)
class TrainConfig:
    """Options of CLIP_ND training (``m3el-hf train`` / ``accelerate launch -m m3el_hf.trainers.train``).

    >>> config = TrainConfig.from_yaml(recipe_path("tiny-cpu"), model="tiny-clip", data="m3el", output_dir="run")
    >>> config.augment_description, config.mixed_precision
    (True, 'no')
    """

    model: str = field(
        metadata={
            "help": "CLIP or CLIP_ND checkpoint to start from: a local folder or a Hub id such as "
            "openai/clip-vit-base-patch32."
        }
    )
    data: str = field(
        metadata={"help": "Prepared M³EL data: a folder written by `m3el-hf prepare` or a Hub dataset id."}
    )
    output_dir: Path = field(
        metadata={
            "help": "Run folder: checkpoints/step-N, best/ (best validation model), final/ (exported model "
            "and training_summary.json), tracker logs."
        }
    )
    topics: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Topics to train and validate on (default: every topic the data has: M³EL's five, or the name "
            "of a `prepare --format mimic` dataset); the summary and the model card name them, and `evaluate` "
            "marks the others unseen."
        },
    )
    tasks: tuple[str, ...] = field(
        default=TASK_NAMES,
        metadata={"help": "Tasks to train and validate on; each training example draws one per epoch."},
    )
    augment_description: bool = field(
        default=True,
        metadata={
            "help": "Entity text is name + description (CLIP_ND); --no-augment-description trains the "
            "name-only ablation. Saved in the model config."
        },
    )
    hard_negatives: bool = field(
        default=False,
        metadata={"help": "Add each mention's other candidates to the batch as extra negatives."},
    )
    drop_leaked: bool = field(
        default=False,
        metadata={
            "help": "Leave out of image-side views (tasks with a mention image) the instances whose mention image "
            "is a copy or near-duplicate of the gold's; counted in the training summary."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of weights init (LoRA), data order and task draws."})
    epochs: int = field(default=3, metadata={"help": "Passes over the training split (ignored with max_steps)."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Optimizer updates to run; overrides epochs when set."}
    )
    per_device_batch_size: int = field(
        default=32,
        metadata={"help": "Mentions per device and micro-batch; the contrastive batch is this × processes."},
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "Micro-batches per optimizer update. Negatives stay within a micro-batch: "
            "accumulation does not enlarge the contrastive batch."
        },
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay, not applied to biases, norms and logit_scale."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of the updates spent warming up."})
    lr_scheduler: LRScheduler = field(
        default="cosine", metadata={"help": "Learning-rate schedule (transformers.get_scheduler)."}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this; 0 or null disables clipping."}
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="no", metadata={"help": "Autocast precision; weights and optimizer state stay float32."}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per device."})
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Seconds a collective waits for the other processes before the run fails (the process-group "
            "timeout): a process lost on another machine ends the job after at most this long."
        },
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch.set_num_threads for each process (default: torch's choice). Tiny models run "
            "far faster on 1 thread: synchronising threads costs more than their small matrix products."
        },
    )
    eval_every: int = field(
        default=0, metadata={"help": "Validate every this many updates; 0 validates at the end of each epoch."}
    )
    eval_split: str | None = field(
        default="validation",
        metadata={
            "help": "Split to validate on and select the best model by (mean accuracy); none disables validation."
        },
    )
    eval_max_instances: int | None = field(
        default=None, metadata={"help": "Validate on a fixed seeded sample of this many instances."}
    )
    save_every: int = field(
        default=0, metadata={"help": "Checkpoint every this many updates; 0 checkpoints at the end of each epoch."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep only the newest this many checkpoints; null keeps all."}
    )
    resume_from: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint folder to resume from, or 'latest' for the newest under "
            "output_dir/checkpoints (a fresh start when there is none)."
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Delete what a non-empty --output-dir holds (an earlier run) and start afresh; without it (or "
            "--resume-from) such a folder is refused, so that two runs never share one."
        },
    )
    report_to: tuple[Tracker, ...] = field(
        default=("none",), metadata={"help": "Trackers to log to (accelerate's), e.g. tensorboard wandb."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every this many updates."})
    lora: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters (plus both projections and logit_scale) instead of all "
            "weights; the exported model has them merged."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: tuple[str, ...] = field(
        default=_ATTENTION_PROJECTIONS, metadata={"help": "Linear layers that get LoRA adapters."}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        if isinstance(self.eval_split, str) and self.eval_split.lower() in ("", "none", "null"):
            object.__setattr__(self, "eval_split", None)  # how the command line spells "no validation"
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._check_choices()
        self._check_numbers()
        self._warn_ignored()

    def _check_choices(self) -> None:
        if self.topics is not None:
            check_topics(self.topics, choices=None)  # against the data's own topics when training starts
        for task in self.tasks:
            get_task(task)
        if not self.tasks:
            raise ValueError(f"TrainConfig: tasks is empty; pick some of {', '.join(TASK_NAMES)}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(
                f"TrainConfig: lr_scheduler={self.lr_scheduler!r} is not supported; use one of {LR_SCHEDULERS}."
            )
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"TrainConfig: mixed_precision={self.mixed_precision!r}; use 'no', 'fp16' or 'bf16'.")
        bad = [t for t in self.report_to if t not in TRACKERS]
        if bad or not self.report_to or ("none" in self.report_to and len(self.report_to) > 1):
            raise ValueError(
                f"TrainConfig: report_to={list(self.report_to)} must be 'none' alone or some of "
                f"{', '.join(TRACKERS[1:])}."
            )
        if not self.lora_target_modules:
            raise ValueError(f"TrainConfig: lora_target_modules is empty; e.g. {' '.join(_ATTENTION_PROJECTIONS)}.")

    def _check_numbers(self) -> None:
        positive = ("epochs", "per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "lora_r")
        positive += ("lora_alpha", "max_steps", "eval_max_instances", "save_total_limit", "cpu_threads", "ddp_timeout")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig: {name}={value} must be a positive integer.")
        for name in ("eval_every", "save_every", "num_workers", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"TrainConfig: {name}={value} must be >= 0 (see its help for what 0 means).")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig: learning_rate={self.learning_rate} must be > 0, e.g. 2e-5.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"TrainConfig: warmup_ratio={self.warmup_ratio} must be in [0, 1), e.g. 0.1.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"TrainConfig: lora_dropout={self.lora_dropout} must be in [0, 1).")

    def _warn_ignored(self) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        lora_options = [n for n in defaults if n.startswith("lora_") and getattr(self, n) != defaults[n]]
        if not self.lora and lora_options:
            logger.warning("TrainConfig: %s ignored because lora=False.", ", ".join(lora_options))
        if self.eval_split is None and (self.eval_every or self.eval_max_instances):
            logger.warning("TrainConfig: eval_every and eval_max_instances are ignored because eval_split is null.")

    def to_dict(self) -> dict[str, Any]:
        """The options as plain YAML/JSON values (paths as strings, tuples as lists)."""
        return {
            name: str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The options as a YAML recipe; written to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "TrainConfig") -> TrainConfig:
        """Build a config from option values, naming `source` (a recipe file, the command line) in errors."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(names)}.")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if values.get(name) is None]
        if missing:
            flags = " ".join(f"--{name.replace('_', '-')}" for name in missing)
            raise ValueError(f"{source}: missing {', '.join(missing)}; set them in the recipe or pass {flags}.")
        return dataclass_from_namespace(cls, argparse.Namespace(**values))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a YAML recipe; keyword `overrides` win over its values.

        Args:
            path (`str` or `Path`): The recipe file (see [`recipe_path`] for the packaged ones).
            overrides (`Any`): Option values that replace the recipe's.
        """
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe must be a YAML mapping of TrainConfig options, got {type(values)}.")
        return cls.from_dict({**values, **overrides}, source=str(path))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add ``--recipe`` and one flag per option to `parser`; flags not given stay absent from the namespace."""
        parser.add_argument(
            "--recipe",
            help=f"A YAML recipe: a path or a packaged name ({', '.join(available_recipes())}). Its values "
            "replace the defaults shown below, and flags given explicitly override both.",
        )
        add_dataclass_arguments(parser, cls)
        names = {f.name for f in dataclasses.fields(cls)}
        for action in parser._actions:
            if action.dest in names:
                # Absent unless given, so that a dataclass default never overwrites a recipe value.
                if action.required:
                    action.help = action.help.replace(" (required)", " (required, here or in --recipe)")
                action.default, action.required = argparse.SUPPRESS, False
        return parser

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> TrainConfig:
        """Build the config from [`add_arguments`]' namespace: the recipe, if any, overridden by the given flags."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {name: value for name, value in vars(namespace).items() if name in names}
        recipe = getattr(namespace, "recipe", None)
        if recipe:
            return cls.from_yaml(recipe_path(recipe), **given)
        return cls.from_dict(given, source="command line")


def available_recipes() -> list[str]:
    """Names of the recipes shipped in the package (``trainers/*.yaml``)."""
    return sorted(
        p.name.removesuffix(".yaml") for p in importlib.resources.files(_RECIPES).iterdir() if p.name.endswith(".yaml")
    )


def recipe_path(name: str | Path) -> Path:
    """Resolve a recipe: an existing YAML file, or the name of a packaged one (``"tiny-cpu"``).

    >>> recipe_path("tiny-cpu").name
    'tiny-cpu.yaml'
    """
    path = Path(name)
    if path.is_file():
        return path
    packaged = importlib.resources.files(_RECIPES) / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(
        f"Recipe {str(name)!r} is neither a file nor a packaged recipe; use a YAML path or one of "
        f"{', '.join(available_recipes())}."
    )
