"""m3el-hf: the M³EL multi-modal entity-linking benchmark and CLIP_ND for the Hugging Face ecosystem.

Public names are imported on first use, as transformers does: ``import m3el_hf`` stays fast for the
data commands, and torch is imported only by what needs it. Importing it changes nothing in the import system.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # re-exports for type checkers and IDEs; at run time `__getattr__` imports on first use
    from .data.features import INSTANCE_FEATURES, KB_FEATURES, KB_SPLIT, SPLITS, task_columns, task_features
    from .evaluation.metrics import accuracy_at_1, evaluate_module_path, gold_ranks, hits_at_k, mrr, ranking_metrics
    from .linking import EntityIndex, EntityLinker, LinkedEntity, Mention
    from .modeling.collator import M3ELCollator, qid_to_int
    from .modeling.configuration_clipnd import CLIPNDConfig
    from .modeling.loss import ContrastiveMELLoss
    from .modeling.modeling_clipnd import CLIPNDModel, CLIPNDOutput, rank_candidates, score
    from .modeling.processing import load_processor
    from .modeling.tiny import build_tiny_clip
    from .tasks import TASK_NAMES, TASKS, TOPICS, Task, get_task


_EXPORTS = {
    "modeling.collator": ("M3ELCollator", "qid_to_int"),
    "modeling.configuration_clipnd": ("CLIPNDConfig",),
    "data.features": ("INSTANCE_FEATURES", "KB_FEATURES", "KB_SPLIT", "SPLITS", "task_columns", "task_features"),
    "modeling.loss": ("ContrastiveMELLoss",),
    "evaluation.metrics": (
        "accuracy_at_1",
        "evaluate_module_path",
        "gold_ranks",
        "hits_at_k",
        "mrr",
        "ranking_metrics",
    ),
    "modeling.modeling_clipnd": ("CLIPNDModel", "CLIPNDOutput", "rank_candidates", "score"),
    "modeling.processing": ("load_processor",),
    "tasks": ("TASK_NAMES", "TASKS", "TOPICS", "Task", "get_task"),
    "modeling.tiny": ("build_tiny_clip",),
    "linking": ("EntityIndex", "EntityLinker", "LinkedEntity", "Mention"),
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

