"""Mention and entity texts: a checkpoint's templates over M³EL's fields.

Training (`M3ELCollator`), evaluation, linking and the MTEB encoder all write texts here, so a mention or an entity
reads the same everywhere. The templates come from the model's config; `CLIPNDConfig` holds their defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .configuration_clipnd import TEMPLATE_FIELDS, CLIPNDConfig, check_template, settings_of

__all__ = ["TextTemplates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextTemplates:
    """How a checkpoint writes a mention and an entity as text; the fields are `CLIPNDConfig`'s, with its defaults.

    >>> templates = TextTemplates()
    >>> templates.mention_text("Paris", "Paris is in France."), templates.entity_text({"name": "Paris"})
    ('Paris : Paris is in France.', 'Paris : ')
    """

    mention_template: str = CLIPNDConfig.mention_template
    entity_template: str = CLIPNDConfig.entity_template
    entity_name_template: str = CLIPNDConfig.entity_name_template
    augment_description: bool = CLIPNDConfig.augment_description

    def __post_init__(self) -> None:
        for name, allowed in TEMPLATE_FIELDS.items():
            check_template(name, getattr(self, name), allowed)
        ignored = "entity_name_template" if self.augment_description else "entity_template"
        if getattr(self, ignored) != getattr(CLIPNDConfig, ignored):
            logger.warning("`%s` is ignored when augment_description=%s.", ignored, self.augment_description)

    @classmethod
    def of(cls, config: Any) -> TextTemplates:
        """The templates a model config records (a `CLIPNDConfig`, or the dict of a ``config.json``); a plain CLIP
        config gives the defaults."""
        settings = settings_of(dict(config) if isinstance(config, Mapping) else config.to_dict())
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})

    @property
    def entity_text_template(self) -> str:
        """The entity template in use: `entity_template` if `augment_description`, else `entity_name_template`."""
        return self.entity_template if self.augment_description else self.entity_name_template

    def mention_text(self, mention: str | None, sentence: str | None) -> str:
        """The mention's text: `mention_template` over its surface form and sentence, nothing else."""
        return self.mention_template.format(mention=mention or "", sentence=sentence or "")

    def entity_text(self, entity: Mapping[str, Any]) -> str:
        """An entity's text: name and description (`augment_description`) or its name only."""
        name, description = entity.get("name") or "", entity.get("description") or ""
        return self.entity_text_template.format(name=name, description=description)
