"""The training stage: CLIP_ND trained with Accelerate (``m3el-hf train``, ``trainers/train.py``).

`config` holds the options and recipes, `components` builds the model, data, optimizer and schedule,
`loop` runs the epochs and validation, `checkpoints` saves, resumes and exports.
"""
