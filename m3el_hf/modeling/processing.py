"""Loading the text and image preprocessing that belongs to a CLIP or CLIP_ND checkpoint, and a batched fast path.

`FastImagePreprocessor` gives the same ``pixel_values`` as a PIL-backend image processor (bit for bit), with
less work per image: the processor converts every image PIL → NumPy → PIL → NumPy and rescales and normalises
each one in float64 and float32 on its own, about 0.2 ms of Python overhead per 32×32 image, which made the
image processor the bottleneck of `M3ELCollator`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import AutoImageProcessor, AutoTokenizer, BaseImageProcessor, PreTrainedTokenizerBase
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BaseImageProcessor as _BaseImageProcessor
from transformers.image_transforms import center_crop, get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import ChannelDimension, PILImageResampling, get_image_size_for_max_height_width

from ..images import open_image, to_rgb
from .decoding import decode_rgb, direct_size

__all__ = ["FastImagePreprocessor", "load_processor", "lookup", "tokenize"]

logger = logging.getLogger(__name__)

# The methods the fast path reproduces. A subclass overriding any of them (e.g. a `_preprocess` with patches,
# as LLaVA-NeXT's does) preprocesses differently, so it goes through the processor itself.
_REPRODUCED = {
    PilBackend: ("process_image", "convert_to_rgb", "resize", "center_crop", "rescale", "normalize", "_preprocess"),
    _BaseImageProcessor: ("__call__", "preprocess", "_preprocess_image_like_inputs", "_prepare_image_like_inputs"),
}


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


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (int64) of `texts`, padded to the longest, truncated to `max_length`.

    The tensors of ``tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
    return_tensors="pt")``, with each distinct text tokenised once (a text's tokens depend on it alone, and the
    longest text is among the distinct ones) and built through NumPy: `torch.tensor` on the nested lists costs
    about 25 µs per short text, as much as tokenising it.
    """
    first: dict[str, int] = {}
    rows = [first.setdefault(text, len(first)) for text in texts]
    tokens = tokenizer(list(first), padding="longest", truncation=True, max_length=max_length)
    out = {key: np.asarray(tokens[key], dtype=np.int64) for key in ("input_ids", "attention_mask")}
    if len(first) < len(rows):
        out = {key: value[rows] for key, value in out.items()}
    return {key: torch.from_numpy(value) for key, value in out.items()}


class FastImagePreprocessor:
    """The ``pixel_values`` of a PIL-backend image processor for a batch of PIL images, computed faster.

    Per image it does only the PIL work the processor does (RGB conversion, resize to the size transformers
    computes, centre crop at transformers' offsets); rescaling and normalisation, which depend on nothing
    but a pixel's channel and uint8 value, become one table lookup over the stacked batch. The table is
    built by the processor's own `rescale` and `normalize`, so the float64 → float32 path and the result
    are exactly the processor's. Settings it does not reproduce (``do_pad``, a subclass that overrides a
    preprocessing step, a torchvision `resample`, an unusual `size`), or inputs that are not PIL images,
    go through the processor itself. The settings are read once, here; it pickles into DataLoader workers.

    Args:
        image_processor (`BaseImageProcessor`):
            The processor to reproduce, e.g. the `CLIPImageProcessorPil` of [`load_processor`].

    >>> fast = FastImagePreprocessor(image_processor)  # doctest: +SKIP
    >>> pixel_values = fast(images)  # doctest: +SKIP
    """

    def __init__(self, image_processor: BaseImageProcessor) -> None:
        self.image_processor = image_processor
        self._output_sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self._device_tables: dict[torch.device, torch.Tensor] = {}
        self.unsupported = _unsupported(image_processor)
        if self.unsupported:
            _log_fallback(type(image_processor).__name__, self.unsupported)
            return
        p = image_processor
        self.do_convert_rgb = bool(p.do_convert_rgb)
        self.resize_size = p.size if p.do_resize else None
        self.resample = PILImageResampling.BILINEAR if p.resample is None else p.resample
        self.crop_size = (int(p.crop_size.height), int(p.crop_size.width)) if p.do_center_crop else None
        self.table = _value_table(p)
        if self.table.dtype != np.float32:
            self.unsupported = f"{type(p).__name__} outputs {self.table.dtype}, not float32"
            _log_fallback(type(p).__name__, self.unsupported)

    def __getstate__(self) -> dict[str, Any]:
        # Tables on an accelerator stay in this process: a DataLoader worker must not touch the device.
        return {**self.__dict__, "_device_tables": {}}

    def __call__(self, images: Sequence[Any], uint8: bool = False) -> torch.Tensor:
        """Preprocess `images` into a float32 tensor `(N, 3, H, W)`, as ``processor(images=images)`` would.

        With `uint8`, the result is `pixels`'s uint8 tensor wherever the fast path applies (float32 otherwise).
        Each image is decoded once, whichever path it takes.
        """
        images = list(images)
        pixels = self._pixels(images)  # replaces bytes it decoded by the decoded image, for the fallback
        if pixels is None:
            decoded = [open_image(image) if isinstance(image, bytes) else image for image in images]
            return self.image_processor(images=decoded, return_tensors="pt")["pixel_values"]
        return pixels if uint8 else self.normalize(pixels)

    def pixels(self, images: Sequence[Any]) -> torch.Tensor | None:
        """The images resized and cropped, as uint8 `(N, H, W, 3)`: `normalize` turns them into ``pixel_values``.

        A quarter of the bytes of the float32 result, to send between processes and to the accelerator, in the
        layout the decoders write (the channels move first in `normalize`, where each value is read anyway).
        Images are PIL images or encoded bytes; a JPEG or PNG that `decoding` takes is decoded straight into an
        array (the same pixels, tested), which is only cropped when it is at the checkpoint's size (prepared
        with ``--image-size``); other files are decoded as `datasets` decodes them. None when the processor
        itself must preprocess them (see the class docstring).
        """
        return self._pixels(list(images))

    def _pixels(self, images: list[Any]) -> torch.Tensor | None:
        """`pixels`; bytes it decodes with PIL are replaced in `images` by the decoded image."""
        if not images or self.unsupported:
            return None
        out = None
        for i, image in enumerate(images):
            array = self._direct_array(image) if isinstance(image, bytes) else None
            if array is None:
                if isinstance(image, bytes):
                    image = images[i] = open_image(image)
                if not self._handles(image):
                    return None
                array = self._prepare(image)
            if out is None:
                out = np.empty((len(images), *array.shape), dtype=np.uint8)
            elif array.shape != out.shape[1:]:
                _log_fallback(type(self.image_processor).__name__, "images of different sizes after preprocessing")
                return None
            # Copied at once, while the decoded image is still in the CPU's cache, rather than stacked at the end.
            out[i] = array
        return torch.from_numpy(out)

    def _direct_array(self, data: bytes) -> np.ndarray | None:
        """The resized and cropped uint8 RGB array of a JPEG or PNG that `decoding` takes, else None."""
        size = direct_size(data) if self.do_convert_rgb else None
        array = None if size is None else decode_rgb(data)
        if array is None:
            return None
        if self.resize_size is not None and self._output_size(*size) != size:
            return self._prepare(PIL.Image.fromarray(array))
        return self._crop(array)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """float32 ``pixel_values`` `(N, 3, H, W)` from uint8 `pixels` `(N, H, W, 3)` (`pixels`'s output), on
        `pixels`'s device, bit for bit.

        Each value goes through the processor's rescale-and-normalise table, per channel.
        """
        if pixels.device.type != "cpu":
            table = self._device_tables.get(pixels.device)
            if table is None:
                table = self._device_tables[pixels.device] = torch.from_numpy(self.table).to(pixels.device)
            return lookup(table, pixels)
        source = pixels.numpy()
        out = np.empty((source.shape[0], 3, *source.shape[1:3]), dtype=np.float32)
        for i in range(len(source)):  # image by image: the working set stays in the CPU's cache
            for c in range(3):
                # mode="clip" skips the bounds check's buffering; a uint8 index is always in range.
                np.take(self.table[c], source[i, :, :, c], out=out[i, c], mode="clip")
        return torch.from_numpy(out)

    def _handles(self, image: Any) -> bool:
        # Without RGB conversion the processor keeps an L or RGBA image's channels: leave those to it.
        return (
            not self.unsupported and isinstance(image, PIL.Image.Image) and (self.do_convert_rgb or image.mode == "RGB")
        )

    def _prepare(self, image: PIL.Image.Image) -> np.ndarray:
        """One image as uint8 `(H, W, 3)`: RGB, resized and cropped as the processor does."""
        if self.do_convert_rgb:
            image = to_rgb(image)
        if self.resize_size is not None:
            height, width = self._output_size(image.height, image.width)
            if (width, height) != image.size:  # PIL would return an identical copy
                image = image.resize((width, height), resample=self.resample, reducing_gap=None)
        return self._crop(np.asarray(image))

    def _crop(self, array: np.ndarray) -> np.ndarray:
        """The processor's centre crop of an `(H, W, 3)` array (a view, or transformers' padded copy)."""
        if self.crop_size is None:
            return array
        crop_height, crop_width = self.crop_size
        top, left = (array.shape[0] - crop_height) // 2, (array.shape[1] - crop_width) // 2
        if top >= 0 and left >= 0:
            return array[top : top + crop_height, left : left + crop_width]
        # Smaller than the crop: transformers pads with zeros, so let it do the rare case.
        return center_crop(array, self.crop_size, ChannelDimension.LAST, ChannelDimension.LAST)

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        """`_resize_output_size` for this processor, remembered per input size (at most 4,096 of them)."""
        sizes = self._output_sizes
        size = sizes.get((height, width))
        if size is None:
            if len(sizes) >= 4096:
                sizes.clear()
            size = sizes[(height, width)] = _resize_output_size(height, width, self.resize_size)
        return size


def lookup(table: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Per channel `c`, ``table[c][pixels[..., c]]``: float32 `(N, 3, H, W)` from uint8 `pixels` `(N, H, W, 3)`, in
    torch."""
    return torch.stack([table[c][pixels[..., c].long()] for c in range(3)], dim=1)


def _unsupported(p: BaseImageProcessor) -> str:
    """Why the fast path cannot reproduce `p` (empty when it can)."""
    if not isinstance(p, PilBackend):
        return f"{type(p).__name__} is not a PIL-backend image processor"
    for base, names in _REPRODUCED.items():
        overridden = [name for name in names if getattr(type(p), name) is not getattr(base, name)]
        if overridden:
            return f"{type(p).__name__} overrides {', '.join(overridden)}"
    if getattr(p, "do_pad", False):
        return "do_pad=True"
    if not (p.do_rescale or p.do_normalize):
        return "neither do_rescale nor do_normalize (uint8 output)"
    if p.resample is not None and not isinstance(p.resample, int):
        return f"resample={p.resample!r} is not a PIL filter"
    if p.do_resize and _size_kind(p.size) is None:
        return f"size={dict(p.size)!r}"
    if p.do_center_crop and not (p.crop_size and p.crop_size.height and p.crop_size.width):
        return f"crop_size={p.crop_size!r}"
    return ""


def _size_kind(size: Any) -> str | None:
    """Which branch of `PilBackend.resize` `size` takes, in its order, or None for a size it rejects."""
    if not size:
        return None
    if size.shortest_edge and size.longest_edge:
        return "shortest_longest"
    if size.shortest_edge:
        return "shortest"
    if size.max_height and size.max_width:
        return "max"
    if size.height and size.width:
        return "exact"
    return None


def _resize_output_size(height: int, width: int, size: Any) -> tuple[int, int]:
    """The `(height, width)` `PilBackend.resize` resizes an image of this size to, by the same functions."""
    kind = _size_kind(size)
    if kind == "shortest_longest":
        return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
    if kind == "shortest":
        # Only the shape is read: a broadcast view stands in for the image without allocating it.
        shape_only = np.broadcast_to(np.uint8(0), (3, height, width))
        return get_resize_output_image_size(
            shape_only, size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
    if kind == "max":
        return get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
    return size.height, size.width


def _value_table(p: BaseImageProcessor) -> np.ndarray:
    """float32 `(3, 256)`: the processor's rescaled and normalised value of each uint8 value, per channel.

    Both steps are per element, so running the processor's own methods over every value once gives each
    pixel's result exactly, dtype path included (rescale in float64 then float32, normalise in float32).
    """
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()
    if p.do_rescale:
        values = p.rescale(values, p.rescale_factor)
    if p.do_normalize:
        values = p.normalize(values, p.image_mean, p.image_std)
    return np.ascontiguousarray(values.reshape(3, 256))


@functools.cache
def _log_fallback(processor: str, reason: str) -> None:
    logger.debug("FastImagePreprocessor calls %s itself: %s.", processor, reason)
