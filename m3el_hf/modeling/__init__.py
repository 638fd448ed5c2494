"""The modeling stage: CLIP_ND (`configuration_clipnd`, `modeling_clipnd`, `loss`) and its inputs.

`processing` loads the checkpoint's tokenizer and image processor, `collator` turns rows into the model's
batches, and `tiny` builds a tiny random CLIP offline.
"""
