"""The hub stage: publishing to the Hugging Face Hub.

`model_card` renders a checkpoint's card (its ``.eval_results/`` entries come from `m3el_hf.benchmark`),
`staging` builds the exact folder to upload, and `push` uploads it (or writes it for a dry run).
"""
