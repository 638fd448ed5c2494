"""m3el-hf: the M³EL multi-modal entity-linking benchmark and CLIP_ND for the Hugging Face ecosystem."""

from .collator import M3ELCollator, qid_to_int
from .configuration_clipnd import CLIPNDConfig
from .features import INSTANCE_FEATURES, KB_FEATURES, KB_SPLIT, SPLITS, task_columns, task_features
from .loss import ContrastiveMELLoss
from .metrics import accuracy_at_1, evaluate_module_path, gold_ranks, hits_at_k, mrr, ranking_metrics
from .modeling_clipnd import CLIPNDModel, CLIPNDOutput, rank_candidates, score
from .processing import load_processor
from .tasks import TASK_NAMES, TASKS, TOPICS, Task, get_task
from .tiny import build_tiny_clip

__version__ = "0.1.0"

__all__ = [
    "INSTANCE_FEATURES",
    "KB_FEATURES",
    "KB_SPLIT",
    "SPLITS",
    "TASKS",
    "TASK_NAMES",
    "TOPICS",
    "CLIPNDConfig",
    "CLIPNDModel",
    "CLIPNDOutput",
    "ContrastiveMELLoss",
    "M3ELCollator",
    "Task",
    "__version__",
    "accuracy_at_1",
    "build_tiny_clip",
    "evaluate_module_path",
    "get_task",
    "gold_ranks",
    "hits_at_k",
    "load_processor",
    "mrr",
    "qid_to_int",
    "rank_candidates",
    "ranking_metrics",
    "score",
    "task_columns",
    "task_features",
]
