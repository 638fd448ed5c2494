"""CLIP_ND in transformers' Auto classes, registered without importing torch when m3el_hf is imported.

After ``import m3el_hf``, ``AutoConfig.from_pretrained`` and ``AutoModel.from_pretrained`` return
`CLIPNDConfig` and `CLIPNDModel` for a CLIP_ND checkpoint. Registering needs those classes, and
importing them costs seconds (torch and transformers' CLIP) that every ``m3el-hf`` command and
data-only user would pay. So the registration runs when transformers is imported: at once if it
already is, otherwise right after its package has been imported, before anything from it can be
used. `modeling_clipnd` registers both classes when it is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["register_auto_classes"]

logger = logging.getLogger(__name__)

TRIGGER = "transformers"
REGISTERING_MODULE = "m3el_hf.modeling.modeling_clipnd"


class _ThenRegister(importlib.abc.Loader):
    """Runs `loader` for transformers' package, then imports `REGISTERING_MODULE`; the rest is `loader`'s."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _remove_finder()
        try:
            importlib.import_module(REGISTERING_MODULE)
        except Exception as error:  # never break `import transformers`; using CLIP_ND raises the cause again
            # Also a RuntimeError when another thread is importing the registering module, which registers anyway.
            logger.warning(
                "CLIP_ND is not registered with transformers' Auto classes yet: importing %s failed (%s: %s); "
                "`from m3el_hf import CLIPNDModel` registers it.",
                REGISTERING_MODULE,
                type(error).__name__,
                error,
            )

    def __getattr__(self, name: str) -> Any:
        # get_source, get_resource_reader, ...: tracebacks, inspect and importlib.resources keep working.
        if name == "_loader":  # not set (an instance made by copy or pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self._loader, name)


class _AfterTransformers(importlib.abc.MetaPathFinder):
    """Finds transformers' package through the other finders and wraps its loader in `_ThenRegister`."""

    def __init__(self):
        self._searching = threading.local()

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        # Not while asking the other finders: one of them may call importlib.util.find_spec itself.
        if fullname != TRIGGER or getattr(self._searching, "active", False):
            return None
        self._searching.active = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None and spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader)
                    return spec
            return None
        finally:
            self._searching.active = False


_FINDER = _AfterTransformers()


def _remove_finder() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def register_auto_classes() -> None:
    """Register CLIP_ND with transformers' Auto classes now, or right after transformers is imported.

    Called by ``import m3el_hf``.
    """
    if TRIGGER in sys.modules:
        importlib.import_module(REGISTERING_MODULE)
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
