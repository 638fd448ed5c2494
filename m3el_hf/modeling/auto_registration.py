"""CLIP_ND in transformers' Auto classes, registered without importing torch when m3el_hf is imported.

After ``import m3el_hf``, ``AutoConfig.from_pretrained`` and ``AutoModel.from_pretrained`` return
`CLIPNDConfig` and `CLIPNDModel` for a CLIP_ND checkpoint. Registering needs those classes, and
importing them costs seconds (torch and transformers' CLIP) that every ``m3el-hf`` command and
data-only user would pay. So the registration runs when transformers is imported: at once if it
already is, otherwise right after its package has been imported, before anything from it can be
used. `modeling_clipnd` registers both classes when it is imported.

Importing `configuration_clipnd` is what imports transformers when a user touches `CLIPNDConfig` first: the
registration then cannot import `modeling_clipnd`, which needs the half-initialised configuration module. It is
deferred, and `configuration_clipnd` finishes it on its last line ([`finish_deferred_registration`]).
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

__all__ = ["finish_deferred_registration", "register_auto_classes"]

logger = logging.getLogger(__name__)

TRIGGER = "transformers"
REGISTERING_MODULE = "m3el_hf.modeling.modeling_clipnd"
# The modules the registering module imports from this package at its top: while one of them is half initialised,
# importing the registering module would fail (or, for itself, return it half done).
_REGISTRATION_CHAIN = ("m3el_hf.modeling.configuration_clipnd", REGISTERING_MODULE)
_deferred = threading.Event()


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
            _register()
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


def _initializing(name: str) -> bool:
    """Whether module `name` is being imported (its code has not finished running): importlib's own marker."""
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register() -> None:
    """Import the registering module, or defer while a module of its chain is half initialised.

    A half-initialised `modeling_clipnd` registers on its own last lines; a half-initialised
    `configuration_clipnd` calls [`finish_deferred_registration`] on its last line.
    """
    if any(_initializing(name) for name in _REGISTRATION_CHAIN):
        _deferred.set()
        return
    importlib.import_module(REGISTERING_MODULE)


def finish_deferred_registration() -> None:
    """Complete a registration deferred by [`_register`]; called by `configuration_clipnd` once it is defined."""
    if _deferred.is_set() and not _initializing(REGISTERING_MODULE):
        _deferred.clear()
        importlib.import_module(REGISTERING_MODULE)


def register_auto_classes() -> None:
    """Register CLIP_ND with transformers' Auto classes now, or right after transformers is imported.

    Called by ``import m3el_hf``.
    """
    if TRIGGER in sys.modules:
        _register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
