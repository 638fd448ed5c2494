"""m3el-hf: the M³EL multi-modal entity-linking benchmark and CLIP_ND for the Hugging Face ecosystem.

The public API is the pipeline's verbs and the objects a user holds, listed once in `_EXPORTS`. Each name is
imported on first use, as transformers does: ``import m3el_hf`` imports neither torch nor transformers, and
changes nothing in the import system. Helpers (metrics, scoring, features, the tiny test model) are imported
from their modules, e.g. ``from m3el_hf.evaluation.metrics import ranking_metrics``.
"""

import importlib
from typing import Any

from .version import __version__

_EXPORTS = {
    "data.prepare": ("PrepareConfig", "prepare"),
    "training.config": ("TrainConfig",),
    "training.loop": ("train",),
    "evaluation.evaluator": ("evaluate_model",),
    "hub.push": ("push_dataset", "push_model"),
    "modeling.configuration_clipnd": ("CLIPNDConfig",),
    "modeling.modeling_clipnd": ("CLIPNDModel",),
    "modeling.processing": ("load_processor",),
    "modeling.collator": ("M3ELCollator",),
    "linking": ("EntityIndex", "EntityLinker", "Mention"),
    "tasks": ("TASKS", "TOPICS"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, "__version__"])


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
