"""The modeling stage: CLIP_ND (`configuration_clipnd`, `modeling_clipnd`, `loss`) and its inputs.

`processing` loads the checkpoint's tokenizer and image processor, `templates` writes mentions and entities as
text, `collator` turns rows into the model's batches, `encoders` is the inference the evaluator, the linker and the
MTEB encoder share (texts and images in batches, rows of a modality), and `tiny` builds a tiny random CLIP offline.
"""
