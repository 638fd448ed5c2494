"""TextTemplates: a checkpoint's mention and entity texts, with CLIPNDConfig's defaults as their only source."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.configuration_clipnd import CLIPNDConfig
from m3el_hf.modeling.templates import TextTemplates

PACKAGE = Path(__file__).resolve().parents[2] / "m3el_hf"
ENTITY = {"qid": "Q1", "name": "Paris", "description": "capital of France"}


def test_the_defaults_are_the_configs() -> None:
    config = CLIPNDConfig()
    templates = TextTemplates()
    assert templates == TextTemplates.of(config) == TextTemplates.of(config.to_dict())
    assert templates.mention_text("Paris", "Paris is big.") == "Paris : Paris is big."
    assert templates.entity_text(ENTITY) == "Paris : capital of France"
    assert TextTemplates(augment_description=False).entity_text(ENTITY) == "Paris"
    assert templates.mention_text(None, None) == " : " and templates.entity_text({"name": "Paris"}) == "Paris : "


def test_no_other_module_spells_a_default_template() -> None:
    defaults = [getattr(CLIPNDConfig, name) for name in ("mention_template", "entity_template")]
    spelled = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if any(template in path.read_text(encoding="utf-8") for template in defaults)
    )
    assert spelled == ["modeling/configuration_clipnd.py"]


def test_a_checkpoints_templates_reach_every_reader(tiny_clip_path: Path, tmp_path: Path) -> None:
    config = CLIPNDConfig.from_pretrained(tiny_clip_path, mention_template="[{mention}]", augment_description=False)
    config.save_pretrained(tmp_path)
    templates = TextTemplates.of(CLIPNDConfig.from_pretrained(tmp_path))
    assert templates == TextTemplates(mention_template="[{mention}]", augment_description=False)
    collator = M3ELCollator.from_pretrained(tmp_path, tokenizer=None, image_processor=None)
    assert collator.templates == templates
    assert templates.mention_text("Paris", "Paris is big.") == "[Paris]" and templates.entity_text(ENTITY) == "Paris"


def test_bad_templates_are_refused_and_an_ignored_one_is_said(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="description would leak the label"):
        TextTemplates(mention_template="{mention} : {description}")
    with pytest.raises(ValueError, match="is not a valid format string"):
        TextTemplates(entity_template="{name")
    with caplog.at_level(logging.WARNING):
        TextTemplates(entity_template="{name}!", augment_description=False)
    assert "`entity_template` is ignored when augment_description=False." in caplog.text
