"""The package version: one place, read by setup.cfg and re-exported as ``m3el_hf.__version__``."""

__all__ = ["__version__"]

__version__ = "0.1.0"
