"""Turning M³EL rows into CLIP_ND batches: one task per example, golds first, hard negatives after.

The batch layout is the contract with `CLIPNDModel.forward`. For each side (``mention``, ``entity``):

- ``{side}_input_ids``, ``{side}_attention_mask`` (`(Nt, L)`) and ``{side}_text_rows`` (`(Nt,)`): the texts
  of the rows whose task uses text on that side, and the batch row each belongs to;
- ``{side}_pixel_values`` (`(Ni, 3, H, W)`) and ``{side}_image_rows`` (`(Ni,)`): likewise for images (with
  `M3ELCollator.uint8_pixels`, uint8 ``{side}_pixels`` `(Ni, H, W, 3)` until `M3ELCollator.normalize_pixels`).

These keys are *omitted* when no row of the batch has a text (resp. image) on that side. Entity rows are the
`B` gold entities (row `i` is the gold of mention `i`), then the hard negatives. The other keys are
``labels`` (`arange(B)`), ``mention_qids`` (`(B,)`), ``entity_qids`` (`(E,)`), ``task_ids`` (`(B,)`, into
`TASK_NAMES`), ``num_dropped``, ``num_dropped_negatives`` and ``num_dropped_leaked`` (scalars) and
``return_loss`` (`True`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from ..images import encoded_or_open
from ..tasks import TASK_NAMES, Task, get_task
from .batch_checks import check_batch, gold_candidate_index, leaked
from .configuration_clipnd import CLIPNDConfig, settings_of
from .processing import FastImagePreprocessor, tokenize
from .templates import TextTemplates

__all__ = ["M3ELCollator", "draw_task", "lazy_images", "qid_to_int"]

logger = logging.getLogger(__name__)
DatasetT = TypeVar("DatasetT")

_QID = re.compile(r"Q([1-9][0-9]{0,17})")
_INT63 = (1 << 63) - 1
# CLIP's context length: the fallback when neither the tokenizer nor a config gives a usable maximum
# (a tokenizer trained with `train_new_from_iterator` reports ~1e30).
_CLIP_CONTEXT_LENGTH = 77
_CONFIG_FIELDS = (
    "mention_template",
    "entity_template",
    "entity_name_template",
    "augment_description",
    "hard_negatives",
)


def qid_to_int(qid: str) -> int:
    """Map an entity id to an int64 for `mention_qids` / `entity_qids`.

    A Wikidata id ``"Q<n>"`` maps to `n`. Any other id maps to a stable negative number (63 bits of its
    blake2b digest), so it can never collide with a Wikidata id.

    >>> qid_to_int("Q42"), qid_to_int("local:7") < 0
    (42, True)
    """
    if not isinstance(qid, str) or not qid:
        raise ValueError(f"Expected an entity id such as 'Q42', got {qid!r}.")
    match = _QID.fullmatch(qid)
    if match:
        return int(match.group(1))
    digest = hashlib.blake2b(qid.encode("utf-8"), digest_size=8).digest()
    return -(int.from_bytes(digest, "big") & _INT63) - 1


def draw_task(example_id: str, tasks: Sequence[str], seed: int = 0, epoch: int = 0) -> str:
    """Draw the task of one example: a pure function of `(seed, epoch, example_id)`.

    It hashes with blake2b (never Python's per-process salted `hash`), so every DataLoader worker, every
    rank and every rerun draws the same task for the same example.

    >>> draw_task("person-17", ["T-T"])
    'T-T'
    """
    if len(tasks) == 1:
        return tasks[0]
    digest = hashlib.blake2b(f"{seed}\x1f{epoch}\x1f{example_id}".encode(), digest_size=8).digest()
    return tasks[int.from_bytes(digest, "big") % len(tasks)]


@dataclass
class _Side:
    """The texts and images one side of a batch collects, with the batch row each belongs to."""

    texts: list[str] = field(default_factory=list)
    text_rows: list[int] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    image_rows: list[int] = field(default_factory=list)

    def add(self, row: int, text: str | None, image: Any | None) -> None:
        if text is not None:
            self.texts.append(text)
            self.text_rows.append(row)
        if image is not None:
            # No conversion here: the preprocessing converts to RGB as the checkpoint's processor does
            # (transparent pixels on white), so training sees what evaluation and inference see.
            self.images.append(image)
            self.image_rows.append(row)

    def extend(self, other: _Side, offset: int) -> None:
        """Append `other`'s texts and images, shifting their rows by `offset`."""
        self.texts += other.texts
        self.text_rows += [row + offset for row in other.text_rows]
        self.images += other.images
        self.image_rows += [row + offset for row in other.image_rows]


@dataclass
class M3ELCollator:
    """Collate M³EL rows (as `datasets` yields them) into a CLIP_ND batch; see the module docstring.

    Each example is assigned a task drawn from `tasks`; an example missing an image its task needs is dropped,
    and the count travels in the batch (``num_dropped``), because DataLoader workers cannot update counters
    in the main process. If every example of a batch is dropped, the batch has `B = 0`: ``labels`` and the
    other per-row tensors are empty, no text/image keys are present, and ``num_dropped`` says why. Training
    loops should skip such a batch (``if batch["labels"].numel() == 0``). The collator holds no closures, so
    it pickles into DataLoader workers; use it with `Trainer` under ``remove_unused_columns=False``.

    >>> collator = M3ELCollator.from_pretrained("path/to/clipnd", tasks=("T-T", "TI-TI"))  # doctest: +SKIP
    >>> batch = collator([row_0, row_1])  # doctest: +SKIP
    """

    tokenizer: PreTrainedTokenizerBase = field(
        metadata={"help": "Tokenizer of the text tower; called once per side and batch.", "cli": False}
    )
    image_processor: BaseImageProcessor = field(
        metadata={
            "help": "Image processor of the vision tower (PIL backend); drives one batched preprocessing per side.",
            "cli": False,
        }
    )
    tasks: tuple[str, ...] = field(
        default=TASK_NAMES,
        metadata={
            "help": "Tasks to train or evaluate, in any order. One task fixes it; several draw one per example "
            "from (seed, epoch, id), so one run covers them all."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the per-example task draw."})
    epoch: int = field(
        default=0,
        metadata={
            "help": "Epoch of the per-example task draw; set it before each epoch to redraw. DataLoader "
            "workers copy the collator when the iterator is created, so with persistent_workers=True a "
            "later change does not reach them."
        },
    )
    mention_template: str = field(
        default=CLIPNDConfig.mention_template,
        metadata={"help": "Mention text, from the fields {mention} and {sentence} only."},
    )
    entity_template: str = field(
        default=CLIPNDConfig.entity_template,
        metadata={"help": "Entity text with augment_description, from the fields {name} and {description}."},
    )
    entity_name_template: str = field(
        default=CLIPNDConfig.entity_name_template,
        metadata={"help": "Entity text without augment_description (the ablation), from {name} (and {description})."},
    )
    augment_description: bool = field(
        default=CLIPNDConfig.augment_description,
        metadata={"help": "Append the entity description to its name (CLIP_ND); off for the name-only ablation."},
    )
    hard_negatives: bool = field(
        default=False,
        metadata={
            "help": "Add each instance's other candidates as extra entity rows, after the gold ones; they "
            "use the mention's task, and those lacking an image it needs are left out."
        },
    )
    drop_leaked: bool = field(
        default=False,
        metadata={
            "help": "Leave out examples whose drawn task has an image on the mention side while their mention "
            "image is a copy or near-duplicate of the gold's (column mention_image_leak); counted in "
            "``num_dropped_leaked``.",
            "cli": False,
        },
    )
    uint8_pixels: bool = field(
        default=False,
        metadata={
            "help": "Return images as uint8 ``{side}_pixels`` (channels last, a quarter of the bytes) instead of "
            "float32 ``{side}_pixel_values``; `normalize_pixels` turns them into the latter on the accelerator, bit "
            "for bit.",
            "cli": False,
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Token limit of every text (longer ones are truncated); defaults to the tokenizer's "
            f"model_max_length, or {_CLIP_CONTEXT_LENGTH} when the tokenizer has none."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str | Task):
            self.tasks = (self.tasks,)
        names = [get_task(task).name for task in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`tasks` must list distinct tasks, got {names!r}; pick from {', '.join(TASK_NAMES)}.")
        # Canonical order, so that the same set of tasks gives the same draws however it was listed.
        self.tasks = tuple(sorted(names, key=TASK_NAMES.index))
        self.templates = TextTemplates(
            self.mention_template, self.entity_template, self.entity_name_template, self.augment_description
        )
        if self.max_length is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            self.max_length = limit if isinstance(limit, int) and limit < 1_000_000 else _CLIP_CONTEXT_LENGTH
        if self.max_length < 2:
            raise ValueError(f"`max_length` must be at least 2 (bos and eos), got {self.max_length}.")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str] | Any,
        tasks: Sequence[str] | str = TASK_NAMES,
        **overrides: Any,
    ) -> M3ELCollator:
        """Build the collator of a CLIP_ND (or plain CLIP) checkpoint.

        Templates, `augment_description` and `hard_negatives` come from its config (a plain CLIP config
        gives the defaults), `max_length` from its text `max_position_embeddings`, and the tokenizer and
        the PIL image processor from the same folder.

        Args:
            pretrained_model_name_or_path (`str`, `os.PathLike` or `PreTrainedModel`):
                A checkpoint folder or Hub id, or a loaded model (its `name_or_path` supplies the
                tokenizer and image processor unless they are given in `overrides`).
            tasks (`Sequence[str]` or `str`, *optional*, defaults to all nine tasks):
                See the `tasks` field.
            overrides (`Any`):
                Any other field, e.g. ``seed=1`` or ``tokenizer=...``; they win over the config.
        """
        config, source = _config_dict(pretrained_model_name_or_path)
        settings = settings_of(config)
        kwargs: dict[str, Any] = {key: settings[key] for key in _CONFIG_FIELDS if key in settings}
        text_config = config.get("text_config") or config
        if text_config.get("max_position_embeddings"):
            kwargs["max_length"] = text_config["max_position_embeddings"]
        kwargs.update(overrides)
        if "tokenizer" not in kwargs or "image_processor" not in kwargs:
            if not source:
                raise ValueError(
                    "The model has no `name_or_path` to load its tokenizer and image processor from; pass "
                    "`tokenizer=` and `image_processor=` to `M3ELCollator.from_pretrained`."
                )
            from .processing import load_processor

            tokenizer, image_processor = load_processor(source)
            kwargs.setdefault("tokenizer", tokenizer)
            kwargs.setdefault("image_processor", image_processor)
        return cls(tasks=tasks, **kwargs)

    def task_for(self, example_id: str) -> Task:
        """The task of example `example_id` under the current `seed` and `epoch`."""
        return get_task(draw_task(example_id, self.tasks, self.seed, self.epoch))

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        mentions, entities, negatives = _Side(), _Side(), _Side()
        task_ids: list[int] = []
        mention_qids: list[int] = []
        negative_qids: list[int] = []
        dropped = dropped_negatives = dropped_leaked = 0
        for row in rows:
            task = self.task_for(row["id"])
            if self.drop_leaked and task.mention_needs_image and leaked(row):
                dropped_leaked += 1
                continue
            gold_index = gold_candidate_index(row)
            mention_image = _image(row, task, "mention_image") if task.mention_needs_image else None
            gold_image = _image(row, task, "candidate_images", gold_index) if task.entity_needs_image else None
            if (task.mention_needs_image and mention_image is None) or (task.entity_needs_image and gold_image is None):
                dropped += 1
                continue
            b = len(task_ids)
            task_ids.append(TASK_NAMES.index(task.name))
            mention_qids.append(qid_to_int(row["candidates"][gold_index]["qid"]))
            mentions.add(b, self._mention_text(row, task), mention_image)
            entities.add(b, self._candidate_text(row, gold_index, task), gold_image)
            if self.hard_negatives:
                dropped_negatives += self._add_negatives(row, gold_index, task, negatives, negative_qids)
        # Negatives were numbered from 0 while the golds were still being counted: shift them after the B golds.
        offset = len(task_ids)
        entities.extend(negatives, offset)
        batch = {
            **self._encode("mention", mentions),
            **self._encode("entity", entities),
            "labels": torch.arange(offset, dtype=torch.long),
            "mention_qids": torch.tensor(mention_qids, dtype=torch.long),
            "entity_qids": torch.tensor(mention_qids + negative_qids, dtype=torch.long),
            "task_ids": torch.tensor(task_ids, dtype=torch.long),
            "num_dropped": torch.tensor(dropped, dtype=torch.long),
            "num_dropped_negatives": torch.tensor(dropped_negatives, dtype=torch.long),
            "num_dropped_leaked": torch.tensor(dropped_leaked, dtype=torch.long),
            "return_loss": True,
        }
        check_batch(batch)
        return batch

    def _mention_text(self, row: Mapping[str, Any], task: Task) -> str | None:
        if not task.mention_needs_text:
            return None
        return self.templates.mention_text(_column(row, task, "mention"), _column(row, task, "sentence"))

    def _candidate_text(self, row: Mapping[str, Any], index: int, task: Task) -> str | None:
        return self.templates.entity_text(row["candidates"][index]) if task.entity_needs_text else None

    def _add_negatives(
        self, row: Mapping[str, Any], gold_index: int, task: Task, negatives: _Side, qids: list[int]
    ) -> int:
        """Append the row's non-gold candidates to `negatives`; return how many lacked a needed image."""
        missing = 0
        for index, candidate in enumerate(row["candidates"]):
            if index == gold_index:
                continue
            image = _image(row, task, "candidate_images", index) if task.entity_needs_image else None
            if task.entity_needs_image and image is None:
                missing += 1
                continue
            negatives.add(len(qids), self._candidate_text(row, index, task), image)
            qids.append(qid_to_int(candidate["qid"]))
        return missing

    def _encode(self, side: str, collected: _Side) -> dict[str, torch.Tensor]:
        """Tokenise all texts and process all images of one side, each in a single call."""
        out: dict[str, torch.Tensor] = {}
        if collected.texts:
            tokens = tokenize(self.tokenizer, collected.texts, self.max_length)
            out[f"{side}_input_ids"] = tokens["input_ids"]
            out[f"{side}_attention_mask"] = tokens["attention_mask"]
            out[f"{side}_text_rows"] = torch.tensor(collected.text_rows, dtype=torch.long)
        if collected.images:
            fast = self._fast_images()
            pixels = fast(collected.images, uint8=self.uint8_pixels)
            # uint8 only from the fast path (a processor it falls back to may itself output uint8 values).
            compact = self.uint8_pixels and not fast.unsupported and pixels.dtype == torch.uint8
            out[f"{side}_pixels" if compact else f"{side}_pixel_values"] = pixels
            out[f"{side}_image_rows"] = torch.tensor(collected.image_rows, dtype=torch.long)
        return out

    def normalize_pixels(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`batch` with its uint8 ``{side}_pixels`` (`uint8_pixels`) replaced by float32 ``{side}_pixel_values``.

        Computed where the pixels are (move the batch to the accelerator first); equal to what the collator
        returns without `uint8_pixels`. A batch without uint8 pixels is returned as it is.
        """
        for side in ("mention", "entity"):
            pixels = batch.pop(f"{side}_pixels", None)
            if pixels is not None:
                batch[f"{side}_pixel_values"] = self._fast_images().normalize(pixels)
        return batch

    def _fast_images(self) -> FastImagePreprocessor:
        """The batched equivalent of `image_processor`, built on first use and again if it is replaced."""
        fast = self.__dict__.get("_fast_image_preprocessor")
        if fast is None or fast.image_processor is not self.image_processor:
            fast = self.__dict__["_fast_image_preprocessor"] = FastImagePreprocessor(self.image_processor)
        return fast


def _config_dict(source: Any) -> tuple[dict[str, Any], str]:
    """The config of a checkpoint path, a loaded model or a config, and where to load its processors from."""
    if isinstance(source, str | os.PathLike):
        from transformers import PretrainedConfig

        # A dict, not `AutoConfig`: a plain CLIP folder and an unregistered CLIP_ND one both read fine.
        return PretrainedConfig.get_config_dict(source)[0], os.fspath(source)
    config = getattr(source, "config", source)
    if not hasattr(config, "to_dict"):
        raise TypeError(
            f"Expected a checkpoint path, a model or a config, got {type(source).__name__}; pass the folder "
            "the model was saved to."
        )
    return config.to_dict(), getattr(source, "name_or_path", "") or getattr(config, "_name_or_path", "")


def _column(row: Mapping[str, Any], task: Task, name: str) -> Any:
    if name not in row:
        raise ValueError(
            f"Row {row.get('id')!r} has no {name!r} column, which task {task.name} needs. Load a config or "
            f"columns that include it (see `m3el_hf.data.features.task_columns({task.name!r})`) or restrict `tasks`."
        )
    return row[name]


def _image(row: Mapping[str, Any], task: Task, name: str, index: int | None = None) -> Any | None:
    """The row's image in column `name` (item `index` of it for candidates), or None when it has none."""
    value = _column(row, task, name)
    if index is None or value is None:
        return _decoded(value)
    if len(value) != len(row["candidates"]):
        raise ValueError(
            f"Row {row.get('id')!r}: {name!r} has {len(value)} items but there are {len(row['candidates'])} "
            "candidates; it must be aligned with `candidates` (None where a candidate has no image)."
        )
    return _decoded(value[index])


def _decoded(image: Any) -> Any:
    """What `FastImagePreprocessor` takes: a PIL image, or the encoded bytes of an undecoded ``{"bytes", "path"}``
    value (a path is decoded here, as `datasets` does)."""
    if not isinstance(image, Mapping):
        return image
    return encoded_or_open(image)


def lazy_images(dataset: DatasetT) -> DatasetT:
    """`dataset` with its image columns left undecoded, so that only the images a batch uses are decoded.

    Fetching a row otherwise decodes every candidate image, although a batch needs at most the gold's
    (and the hard negatives'). Works on `datasets.Dataset` and `IterableDataset`.
    """
    from datasets import Image, List

    columns = set(dataset.column_names or ())
    casts = {"mention_image": Image(decode=False), "candidate_images": List(Image(decode=False))}
    for name, feature in casts.items():
        if name in columns:
            dataset = dataset.cast_column(name, feature)
    return dataset
