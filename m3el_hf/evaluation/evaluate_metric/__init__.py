"""`evaluate` modules shipped with m3el_hf; load them with `m3el_hf.evaluation.metrics.evaluate_module_path()`."""
