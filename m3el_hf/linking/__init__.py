"""Linking new mentions: `EntityLinker` ranks entities for a mention, `EntityIndex` searches a whole KB.

Imported on first use (torch loads with them), so that the CLI's commands stay quick to list.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .index import EntityIndex
    from .linker import EntityLinker, LinkedEntity, Mention

_MODULE_OF = {"EntityIndex": "index", "EntityLinker": "linker", "LinkedEntity": "linker", "Mention": "linker"}

__all__ = ["EntityIndex", "EntityLinker", "LinkedEntity", "Mention"]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
