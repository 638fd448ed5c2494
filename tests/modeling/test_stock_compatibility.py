"""CLIP_ND checkpoints are stock CLIP checkpoints: every stock tool opens them; m3el_hf restores its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.configuration_clipnd import SETTINGS_KEY, CLIPNDConfig, settings_of
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.training.checkpoints import export

# Every entity-linking setting away from its default, so that a dropped or defaulted one shows.
SETTINGS = {
    "fusion": "weighted",
    "fusion_text_weight": 0.3,
    "mention_template": "{mention}",
    "entity_template": "{name} ({description})",
    "entity_name_template": "{name}!",
    "augment_description": False,
    "hard_negatives": True,
    "mask_duplicate_qids": False,
}


@pytest.fixture(scope="module")
def exported(tiny_clip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `train` exports (`final/`, `best/`): a CLIP_ND model with its tokenizer and image processor."""
    model = CLIPNDModel.from_pretrained(tiny_clip_path, **SETTINGS)
    tokenizer, image_processor = load_processor(tiny_clip_path)
    return export(model, tokenizer, image_processor, tmp_path_factory.mktemp("export") / "final")


def _fresh(code: str) -> subprocess.CompletedProcess:
    """Run `code` in an interpreter that never imports m3el_hf, warnings as errors."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)


def test_the_export_is_a_stock_clip_checkpoint(exported: Path, tiny_clip_path: Path) -> None:
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "clip" and config["architectures"] == ["CLIPModel"]
    assert config[SETTINGS_KEY] == SETTINGS
    assert not set(SETTINGS) & set(config), "settings only under the settings key"
    processor = json.loads((exported / "processor_config.json").read_text())
    assert processor["processor_class"] == "CLIPProcessor" and "image_processor" in processor
    # No parameter or buffer beyond CLIP's: the fusion is configuration, not weights.
    assert load_file(exported / "model.safetensors").keys() == load_file(tiny_clip_path / "model.safetensors").keys()


def test_settings_round_trip_exactly(exported: Path) -> None:
    config = CLIPNDModel.from_pretrained(exported).config
    assert {name: getattr(config, name) for name in SETTINGS} == SETTINGS
    collator = M3ELCollator.from_pretrained(exported)
    assert (collator.mention_template, collator.entity_template, collator.entity_name_template) == (
        "{mention}",
        "{name} ({description})",
        "{name}!",
    )
    assert (collator.augment_description, collator.hard_negatives) == (False, True)
    # Saving again writes the same file: nothing is lost or added on the way.
    assert json.loads(config.to_json_string()) | {"transformers_version": None} == json.loads(
        CLIPNDConfig.from_dict(config.to_dict()).to_json_string()
    ) | {"transformers_version": None}


@pytest.mark.slow
def test_stock_tools_open_the_export_in_a_fresh_interpreter(exported: Path) -> None:
    """The Hub's widget and its "Use this model" snippet: the pipeline, and every Auto class, without m3el_hf."""
    code = f"""
import json, sys
import numpy as np
import torch
from PIL import Image
from transformers import (AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor,
                          CLIPProcessor, pipeline)
path = {str(exported)!r}
classes = [type(AutoConfig.from_pretrained(path)).__name__, type(AutoModel.from_pretrained(path)).__name__,
           type(AutoModelForZeroShotImageClassification.from_pretrained(path)).__name__,
           type(AutoProcessor.from_pretrained(path)).__name__, type(CLIPProcessor.from_pretrained(path)).__name__]
classifier = pipeline("zero-shot-image-classification", model=path)
image = Image.fromarray(np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3))
labels = ["Paris : city in France", "Titanic : 1997 film"]
ranked = classifier(image, candidate_labels=labels, hypothesis_template="{{}}")
processor = AutoProcessor.from_pretrained(path)
model = AutoModel.from_pretrained(path).eval()
with torch.no_grad():
    logits = model(**processor(text=labels, images=image, return_tensors="pt", padding=True)).logits_per_image
assert not any(name.startswith("m3el_hf") for name in sys.modules)
print(json.dumps({{"classes": classes, "ranked": ranked, "logits": logits[0].tolist()}}))
"""
    done = _fresh(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warn" not in done.stderr.lower() and "does not recognize" not in done.stderr
    out = json.loads(done.stdout)
    assert out["classes"] == ["CLIPConfig", "CLIPModel", "CLIPModel", "CLIPProcessor", "CLIPProcessor"]
    # The pipeline ranks by the same logits, softmaxed, as the model called directly.
    scores = {item["label"]: item["score"] for item in out["ranked"]}
    labels = ["Paris : city in France", "Titanic : 1997 film"]
    expected = torch.tensor(out["logits"]).softmax(-1)
    torch.testing.assert_close(torch.tensor([scores[label] for label in labels]), expected, rtol=1e-4, atol=1e-6)


def test_stock_clip_gives_the_same_embeddings(exported: Path) -> None:
    tokenizer, _ = load_processor(exported)
    tokens = dict(tokenizer(["Titanic : 1997 film", "Paris"], padding=True, return_tensors="pt"))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours, stock = CLIPNDModel.from_pretrained(exported).eval(), CLIPModel.from_pretrained(exported).eval()
    assert type(stock.config) is CLIPConfig
    with torch.no_grad():
        for method, inputs in (("get_text_features", tokens), ("get_image_features", {"pixel_values": pixels})):
            expected = getattr(stock, method)(**inputs).pooler_output
            torch.testing.assert_close(getattr(ours, method)(**inputs).pooler_output, expected)


def test_transformers_auto_classes_know_nothing_of_clipnd(exported: Path) -> None:
    """Nothing is registered with transformers: its Auto classes load a CLIP_ND checkpoint as the plain CLIP it is,
    with m3el_hf and CLIP_ND imported, and `CLIPNDModel` loads it as CLIP_ND."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert CLIPNDConfig.model_type not in CONFIG_MAPPING
    assert (type(AutoConfig.from_pretrained(exported)), type(AutoModel.from_pretrained(exported))) == (
        CLIPConfig,
        CLIPModel,
    )
    assert type(CLIPNDModel.from_pretrained(exported)) is CLIPNDModel


def test_plain_clip_gives_no_settings(tiny_clip_path: Path) -> None:
    assert settings_of(json.loads((tiny_clip_path / "config.json").read_text())) == {}
    assert CLIPNDModel.from_pretrained(tiny_clip_path).config.fusion == "mean"
