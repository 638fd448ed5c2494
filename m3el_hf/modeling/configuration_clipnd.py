"""Configuration of CLIP_ND: a CLIP config plus the entity-linking settings, so a checkpoint describes itself."""

from __future__ import annotations

import logging
import os
import re
import string
from typing import Any, Literal

from transformers import CLIPConfig

__all__ = ["FUSION_MODES", "SETTINGS_KEY", "TEMPLATE_FIELDS", "CLIPNDConfig", "check_template", "settings_of"]

logger = logging.getLogger(__name__)

FUSION_MODES: tuple[str, ...] = ("mean", "weighted")

# The mention template may only see the mention's own text: the gold description would leak the label.
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "mention_template": frozenset({"mention", "sentence"}),
    "entity_template": frozenset({"name", "description"}),
    "entity_name_template": frozenset({"name", "description"}),
}
_BOOL_FIELDS = ("augment_description", "hard_negatives", "mask_duplicate_qids")
SETTINGS_KEY = "clipnd"
"""The ``config.json`` key that holds the entity-linking settings. The rest of the file is a stock CLIP config
(``model_type: clip``, ``architectures: [CLIPModel]``), and stock `CLIPConfig` drops keys it does not declare."""


class CLIPNDConfig(CLIPConfig):
    r"""Configuration of a [`CLIPNDModel`]: CLIP fine-tuned contrastively on mentions against entities whose
    text is their name and description (M³EL, arXiv 2410.18096).

    All [`CLIPConfig`] arguments are accepted unchanged; the weights are exactly CLIP's, so any CLIP checkpoint
    is a valid starting point (`CLIPNDConfig.from_pretrained` converts a `model_type: clip` config).

    Args:
        fusion (`Literal["mean", "weighted"]`, *optional*, defaults to `"mean"`):
            How the text and image embeddings of a text+image (TI) row are fused, both being L2-normalised first
            and the result renormalised. `"mean"` averages them; `"weighted"` takes
            `fusion_text_weight * text + (1 - fusion_text_weight) * image`. Parameter-free, so checkpoints keep
            CLIP's exact state dict.
        fusion_text_weight (`float`, *optional*, defaults to 0.5):
            Weight of the text embedding in `"weighted"` fusion, in [0, 1]; ignored (with a warning) otherwise.
        mention_template (`str`, *optional*, defaults to `"{mention} : {sentence}"`):
            Text of a mention, formatted with the fields `mention` and `sentence`.
        entity_template (`str`, *optional*, defaults to `"{name} : {description}"`):
            Text of an entity when `augment_description` is set, formatted with `name` and `description`.
        entity_name_template (`str`, *optional*, defaults to `"{name}"`):
            Text of an entity when `augment_description` is not set, formatted with `name` and `description`.
        augment_description (`bool`, *optional*, defaults to `True`):
            Whether entity text includes the description (the "ND" of CLIP_ND); selects the template above.
        hard_negatives (`bool`, *optional*, defaults to `False`):
            Whether training batches add each mention's non-gold candidates as extra entity rows.
        mask_duplicate_qids (`bool`, *optional*, defaults to `True`):
            Whether the contrastive loss ignores in-batch entity rows that carry the gold QID of a mention but are
            not its gold row: the same entity twice in a batch is not a negative.

    Saved checkpoints are stock CLIP checkpoints: ``config.json`` says ``model_type: clip`` and holds these
    settings under [`SETTINGS_KEY`], which stock transformers ignores.

    >>> config = CLIPNDConfig(fusion="weighted", fusion_text_weight=0.7)
    >>> config.to_dict()["model_type"], config.to_dict()["clipnd"]["fusion"], config.entity_text_template
    ('clip', 'weighted', '{name} : {description}')
    """

    # The name of the class in memory only: `to_dict` writes "clip", and nothing registers "clipnd" with AutoConfig.
    model_type = "clipnd"

    fusion: Literal["mean", "weighted"] = "mean"
    fusion_text_weight: float = 0.5
    mention_template: str = "{mention} : {sentence}"
    entity_template: str = "{name} : {description}"
    entity_name_template: str = "{name}"
    augment_description: bool = True
    hard_negatives: bool = False
    mask_duplicate_qids: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        self._validate_mel_settings()
        super().__post_init__(**kwargs)

    def _validate_mel_settings(self) -> None:
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"CLIPNDConfig: fusion={self.fusion!r} is not supported; use one of {FUSION_MODES}.")
        if isinstance(self.fusion_text_weight, bool) or not isinstance(self.fusion_text_weight, int | float):
            raise ValueError(
                f"CLIPNDConfig: fusion_text_weight must be a number in [0, 1], got {self.fusion_text_weight!r}."
            )
        self.fusion_text_weight = float(self.fusion_text_weight)
        if not 0.0 <= self.fusion_text_weight <= 1.0:
            raise ValueError(
                f"CLIPNDConfig: fusion_text_weight={self.fusion_text_weight} is outside [0, 1]; it is the weight "
                "of the text embedding in a convex combination with the image embedding."
            )
        if self.fusion != "weighted" and self.fusion_text_weight != 0.5:
            logger.warning(
                "CLIPNDConfig: fusion_text_weight=%s is ignored because fusion=%r; set fusion='weighted' to use it.",
                self.fusion_text_weight,
                self.fusion,
            )
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"CLIPNDConfig: {name} must be True or False, got {getattr(self, name)!r}.")
        for name, allowed in TEMPLATE_FIELDS.items():
            check_template(name, getattr(self, name), allowed)

    @property
    def entity_text_template(self) -> str:
        """The entity template in use: `entity_template` if `augment_description`, else `entity_name_template`."""
        return self.entity_template if self.augment_description else self.entity_name_template

    @classmethod
    def from_clip_config(cls, clip_config: CLIPConfig, **mel_kwargs: Any) -> CLIPNDConfig:
        """Build a CLIP_ND config from a CLIP (or CLIP_ND) config, with the entity-linking settings overridden.

        >>> CLIPNDConfig.from_clip_config(CLIPConfig(projection_dim=16), fusion="mean").projection_dim
        16
        """
        config_dict = _flat(clip_config.to_dict())
        # `model_type` is a class attribute; kept in the dict it would shadow "clipnd" on the instance.
        config_dict.pop("model_type", None)
        config_dict.pop("architectures", None)
        config_dict.update(mel_kwargs)
        return cls(**config_dict)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Load the config of a CLIP or CLIP_ND checkpoint (both say `clip`); MEL kwargs override its settings.

        This is what lets `CLIPNDModel.from_pretrained("openai/clip-vit-base-patch32")` work.
        """
        try:
            config_dict, kwargs = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        except OSError as error:  # not found locally nor on the Hub, offline, no access: one line, not a traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"Cannot load the checkpoint {pretrained_model_name_or_path}: {first}") from None
        model_type = config_dict.get("model_type")
        if model_type != CLIPConfig.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {model_type!r} checkpoint; CLIP_ND starts from a CLIP "
                "checkpoint ('clip'), which is also what CLIP_ND checkpoints are."
            )
        return cls.from_dict(config_dict, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        config_dict = {key: value for key, value in _flat(config_dict).items() if key != "model_type"}
        if config_dict.get("architectures") == ["CLIPModel"]:
            config_dict.pop("architectures")
        # Route MEL overrides through `__init__`, which validates them; `from_dict` would only `setattr` them.
        for name in cls.mel_field_names():
            if name in kwargs:
                config_dict[name] = kwargs.pop(name)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def mel_field_names(cls) -> tuple[str, ...]:
        """Names of the entity-linking settings this config adds to [`CLIPConfig`]."""
        return _MEL_FIELDS

    def to_dict(self) -> dict[str, Any]:
        """The dict of a stock CLIP config, with the entity-linking settings (all of them) under `SETTINGS_KEY`.

        What ``save_pretrained`` writes: stock tools load the folder as plain CLIP, without a warning.
        """
        output = super().to_dict()
        output[SETTINGS_KEY] = {name: output.pop(name, getattr(self, name)) for name in _MEL_FIELDS}
        output["model_type"] = CLIPConfig.model_type
        if output.get("architectures") == ["CLIPNDModel"]:
            output["architectures"] = ["CLIPModel"]
        return output


_MEL_FIELDS = ("fusion", "fusion_text_weight", *TEMPLATE_FIELDS, *_BOOL_FIELDS)


def _flat(config_dict: dict[str, Any]) -> dict[str, Any]:
    """`config_dict` with the settings under `SETTINGS_KEY` moved to the top level, where `CLIPNDConfig` takes them."""
    if not isinstance(config_dict.get(SETTINGS_KEY), dict):
        return config_dict
    flat = {key: value for key, value in config_dict.items() if key != SETTINGS_KEY}
    return {**flat, **config_dict[SETTINGS_KEY]}


def settings_of(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The entity-linking settings a checkpoint's ``config.json`` records under `SETTINGS_KEY`; {} for plain CLIP.

    >>> settings_of({"model_type": "clip", "clipnd": {"fusion": "mean"}})
    {'fusion': 'mean'}
    """
    settings = config_dict.get(SETTINGS_KEY) or {}
    return {name: settings[name] for name in _MEL_FIELDS if name in settings}


def check_template(name: str, template: str, allowed: frozenset[str]) -> None:
    """Raise a `ValueError` unless `template` is a format string over some of the `allowed` fields only."""
    if not isinstance(template, str):
        raise ValueError(f"{name} must be a format string, got {template!r}.")
    try:
        fields = {re.split(r"[.\[]", f)[0] for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"{name}={template!r} is not a valid format string ({err}).") from None
    if not fields or not fields <= allowed:
        leak = " The mention side must never see the entity: its description would leak the label."
        raise ValueError(
            f"{name}={template!r} must use at least one of the fields {sorted(allowed)} and no other; got "
            f"{sorted(fields)}. Example: {CLIPNDConfig.__dataclass_fields__[name].default!r}."
            + (leak if name == "mention_template" else "")
        )
