"""The hub stage: publishing to the Hugging Face Hub.

`model_card` renders a checkpoint's card, `leaderboard` its ``.eval_results/`` entries, `staging` builds the
exact folder to upload, and `push` uploads it (or writes it for a dry run).
"""
