"""The evaluation stage: ranking metrics, the evaluator, and what it writes.

`metrics` scores ranks (tie-aware), `embeddings` gathers every unique text and image once, `evaluator` ranks
candidates or the whole KB for every task × topic, `results` and `plots` write the records, tables and plot,
`command` is ``m3el-hf evaluate``; ``evaluate_metric/`` wraps the metrics as an `evaluate` module.
`mteb_tasks` declares the M³EL tasks for MTEB over `mteb_retrieval`'s shared task, `mteb_model` is CLIP_ND's MTEB
encoder, and `mteb_harness` runs them for ``m3el-hf evaluate --harness mteb``.
"""
