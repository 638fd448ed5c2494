"""m3el-hf: the M³EL multi-modal entity-linking benchmark and CLIP_ND for the Hugging Face ecosystem."""

from .features import INSTANCE_FEATURES, KB_FEATURES, SPLITS, task_columns, task_features
from .tasks import TASK_NAMES, TASKS, TOPICS, Task, get_task

__version__ = "0.1.0"

__all__ = [
    "INSTANCE_FEATURES",
    "KB_FEATURES",
    "SPLITS",
    "TASKS",
    "TASK_NAMES",
    "TOPICS",
    "Task",
    "__version__",
    "get_task",
    "task_columns",
    "task_features",
]
