"""Loading the text and image preprocessing that belongs to a CLIP or CLIP_ND checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, AutoTokenizer, BaseImageProcessor, PreTrainedTokenizerBase

__all__ = ["load_processor"]

logger = logging.getLogger(__name__)


def load_processor(path: str | Path, **kwargs: Any) -> tuple[PreTrainedTokenizerBase, BaseImageProcessor]:
    """Load the tokenizer and the PIL image processor of a checkpoint folder or Hub id.

    The image processor is always the PIL/NumPy backend (e.g. `CLIPImageProcessorPil`): the default backend
    needs torchvision, which is not installed everywhere, and training and evaluation should preprocess
    images the same way on every machine.

    Args:
        path (`str` or `Path`):
            A folder written by `save_pretrained` (or [`build_tiny_clip`]) or a Hub id such as
            ``"openai/clip-vit-base-patch32"``.
        kwargs:
            Passed to both `from_pretrained` calls (e.g. `revision`, `local_files_only`).

    Returns:
        `tuple[PreTrainedTokenizerBase, BaseImageProcessor]`: `(tokenizer, image_processor)`.

    >>> tokenizer, image_processor = load_processor("openai/clip-vit-base-patch32")  # doctest: +SKIP
    """
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(path, backend="pil", **kwargs)
    logger.debug("Loaded %s and %s from %s", type(tokenizer).__name__, type(image_processor).__name__, path)
    return tokenizer, image_processor
