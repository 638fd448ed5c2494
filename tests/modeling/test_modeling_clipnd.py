"""CLIP_ND: config validation, checkpoint compatibility with stock CLIP, encoders, forward and scoring."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from m3el_hf.modeling.configuration_clipnd import CLIPNDConfig
from m3el_hf.modeling.loss import ContrastiveMELLoss
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel, CLIPNDOutput, rank_candidates, score
from m3el_hf.modeling.processing import load_processor
from m3el_hf.tasks import TASKS, Task

TEXTS = ["Titanic : 1997 film", "Paris : city in France", "John Smith : English player", "red novel"]


@pytest.fixture(scope="module")
def model(tiny_clip_path: Path) -> CLIPNDModel:
    return CLIPNDModel.from_pretrained(tiny_clip_path).eval()


@pytest.fixture(scope="module")
def tokens(tiny_clip_path: Path) -> dict[str, torch.Tensor]:
    tokenizer, _ = load_processor(tiny_clip_path)
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --- configuration -------------------------------------------------------------------------------------------


def test_config_defaults_and_entity_template() -> None:
    config = CLIPNDConfig()
    assert config.model_type == "clipnd" and config.fusion == "mean"
    assert config.entity_text_template == "{name} : {description}"
    assert CLIPNDConfig(augment_description=False).entity_text_template == "{name}"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "sum"}, r"fusion='sum' is not supported"),
        ({"fusion": "weighted", "fusion_text_weight": 1.5}, r"outside \[0, 1\]"),
        ({"fusion_text_weight": "half"}, "must be a number"),
        ({"mention_template": "{mention} {entity}"}, r"fields \['mention', 'sentence'\]"),
        ({"entity_template": "plain text"}, "must use at least one of the fields"),
        ({"entity_name_template": "{name"}, "not a valid format string"),
        ({"hard_negatives": "yes"}, "hard_negatives must be True or False"),
    ],
)
def test_config_rejects_invalid_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CLIPNDConfig(**kwargs)


def test_config_warns_when_text_weight_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="m3el_hf.modeling.configuration_clipnd"):
        CLIPNDConfig(fusion="mean", fusion_text_weight=0.3)
    assert "fusion_text_weight=0.3 is ignored" in caplog.text


def test_config_from_clip_config_keeps_towers() -> None:
    clip = CLIPConfig(projection_dim=16, text_config={"hidden_size": 32, "num_attention_heads": 4})
    config = CLIPNDConfig.from_clip_config(clip, fusion="weighted", fusion_text_weight=0.25)
    assert config.projection_dim == 16 and config.text_config.hidden_size == 32
    assert (config.model_type, config.fusion, config.fusion_text_weight) == ("clipnd", "weighted", 0.25)


@pytest.mark.parametrize("model_type", ["bert", "clipnd"])
def test_config_from_pretrained_rejects_other_models(tmp_path: Path, model_type: str) -> None:
    """Anything but a CLIP config is refused in one line, `clipnd` too: CLIP_ND checkpoints say `clip`."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ValueError, match=f"holds a '{model_type}' checkpoint; CLIP_ND starts from a CLIP"):
        CLIPNDConfig.from_pretrained(tmp_path)


# --- checkpoints ---------------------------------------------------------------------------------------------


def test_from_plain_clip_checkpoint(tiny_clip_path: Path) -> None:
    model = CLIPNDModel.from_pretrained(tiny_clip_path, fusion="weighted", fusion_text_weight=0.7)
    assert isinstance(model.config, CLIPNDConfig)
    assert (model.config.fusion, model.config.fusion_text_weight) == ("weighted", 0.7)
    clip = CLIPModel.from_pretrained(tiny_clip_path)
    for name, tensor in clip.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    with pytest.raises(ValueError, match="fusion='bogus'"):
        CLIPNDModel.from_pretrained(tiny_clip_path, fusion="bogus")


def test_init_accepts_clip_config() -> None:
    clip = CLIPConfig(
        projection_dim=8,
        text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16},
        vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16},
    )
    assert isinstance(CLIPNDModel(clip).config, CLIPNDConfig)


# --- encoders ------------------------------------------------------------------------------------------------


def test_encode_single_modalities(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        texts = F.normalize(model.get_text_features(**tokens).pooler_output)
        images = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output)
        torch.testing.assert_close(model.encode_text(**tokens), texts)
        torch.testing.assert_close(model.encode_image(pixels), images)
        torch.testing.assert_close(model.encode(**tokens), texts)
        torch.testing.assert_close(model.encode(pixel_values=pixels), images)


def test_encode_mean_fusion(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        t, i = model.encode_text(**tokens), model.encode_image(pixels)
        fused = model.encode(**tokens, pixel_values=pixels, text_rows=torch.arange(4), image_rows=torch.arange(4))
    torch.testing.assert_close(fused, F.normalize((F.normalize(t) + F.normalize(i)) / 2))


def test_encode_weighted_fusion(tiny_clip_path: Path, tokens: dict, pixels: torch.Tensor) -> None:
    model = CLIPNDModel.from_pretrained(tiny_clip_path, fusion="weighted", fusion_text_weight=0.0).eval()
    with torch.no_grad():
        t, i = model.encode_text(**tokens), model.encode_image(pixels)
        # Row 0 text only, row 1 image only, row 2 fused: weight 0 ignores its text but keeps row 0's.
        out = model.encode(
            tokens["input_ids"][:2],
            tokens["attention_mask"][:2],
            torch.tensor([0, 2]),
            pixels[:2],
            torch.tensor([1, 2]),
            num_rows=3,
        )
    torch.testing.assert_close(out, torch.stack([t[0], i[0], i[1]]))


def test_encode_mixed_batch_equals_per_row(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    text_rows, image_rows = torch.tensor([3, 0, 2]), torch.tensor([2, 1, 4])
    with torch.no_grad():
        out = model.encode(
            **{k: v[:3] for k, v in tokens.items()}, text_rows=text_rows, pixel_values=pixels[:3], image_rows=image_rows
        )
        t, i = model.encode_text(**tokens), model.encode_image(pixels)
    expected = torch.stack([t[1], i[1], F.normalize(t[2] + i[0], dim=0), t[0], i[2]])
    assert out.shape == (5, 16)
    torch.testing.assert_close(out, expected)


def test_encode_is_differentiable(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    model.zero_grad()
    model.encode(**tokens, pixel_values=pixels, text_rows=torch.arange(4), image_rows=torch.arange(4)).sum().backward()
    assert model.text_projection.weight.grad is not None and model.visual_projection.weight.grad is not None
    model.zero_grad()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text_rows": torch.tensor([0, 1, 2, 4])}, r"rows \[3\] have neither a text nor an image"),
        ({"text_rows": torch.tensor([0, 1, 1, 2])}, r"rows \[1\] appear more than once in text_rows"),
        ({"text_rows": torch.tensor([0, 1, 2, 9]), "num_rows": 5}, r"text_rows must lie in \[0, 5\)"),
        ({"text_rows": torch.tensor([0, 1])}, r"text_rows must have shape \(4,\)"),
        ({"num_rows": 6}, r"rows \[4, 5\] have neither"),
    ],
)
def test_encode_rejects_invalid_rows(
    model: CLIPNDModel, tokens: dict, kwargs: dict, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "check_inputs", True)  # all but the shape check read the rows back
    with pytest.raises(ValueError, match=match):
        model.encode(**tokens, **kwargs)


# --- forward -------------------------------------------------------------------------------------------------


def _batch(tokens: dict, pixels: torch.Tensor) -> dict:
    """Two mentions (text, text+image) against three entities (image, text, text), plus ignored extras."""
    return {
        "mention_input_ids": tokens["input_ids"][:2],
        "mention_attention_mask": tokens["attention_mask"][:2],
        "mention_text_rows": torch.tensor([0, 1]),
        "mention_pixel_values": pixels[:1],
        "mention_image_rows": torch.tensor([1]),
        "entity_input_ids": tokens["input_ids"][2:],
        "entity_attention_mask": tokens["attention_mask"][2:],
        "entity_text_rows": torch.tensor([1, 2]),
        "entity_pixel_values": pixels[1:2],
        "entity_image_rows": torch.tensor([0]),
        "labels": torch.tensor([0, 1]),
        "mention_qids": torch.tensor([11, 22]),
        "entity_qids": torch.tensor([11, 22, 33]),
        "task_ids": torch.tensor([0, 4]),
        "num_dropped": torch.tensor(0),
    }


def test_forward_scores_every_mention_against_every_entity(
    model: CLIPNDModel, tokens: dict, pixels: torch.Tensor
) -> None:
    with torch.no_grad():
        out = model(**_batch(tokens, pixels))
    assert isinstance(out, CLIPNDOutput) and out.loss is None
    assert out.logits_per_mention.shape == (2, 3)
    torch.testing.assert_close(out.logits_per_mention, out.logit_scale * out.mention_embeds @ out.entity_embeds.T)
    torch.testing.assert_close(out.logit_scale, model.logit_scale.exp())


def test_forward_loss_matches_contrastive_loss(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    batch = _batch(tokens, pixels)
    out = model(**batch, return_loss=True)
    expected = ContrastiveMELLoss()(
        out.mention_embeds,
        out.entity_embeds,
        batch["labels"],
        batch["mention_qids"],
        batch["entity_qids"],
        out.logit_scale,
    )
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.logit_scale.grad is not None
    model.zero_grad()


def test_forward_loss_needs_labels_and_qids(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor) -> None:
    batch = _batch(tokens, pixels)
    del batch["labels"], batch["entity_qids"]
    with pytest.raises(ValueError, match="needs labels, entity_qids"):
        model(**batch, num_mentions=2, num_entities=3, return_loss=True)


# --- scoring for the nine tasks ------------------------------------------------------------------------------


def _side_inputs(modality: str, n: int, tokens: dict, pixels: torch.Tensor) -> dict:
    inputs = {}
    if "T" in modality:
        inputs |= {"input_ids": tokens["input_ids"][:n], "attention_mask": tokens["attention_mask"][:n]}
    if "I" in modality:
        inputs |= {"pixel_values": pixels[:n], "image_rows": torch.arange(n)}
    return inputs


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.name)
def test_scores_for_every_task(model: CLIPNDModel, tokens: dict, pixels: torch.Tensor, task: Task) -> None:
    batch_size, num_candidates = 2, 2
    with torch.no_grad():
        mentions = model.encode(**_side_inputs(task.mention, batch_size, tokens, pixels), num_rows=batch_size)
        entities = model.encode(
            **_side_inputs(task.entity, batch_size * num_candidates, tokens, pixels),
            num_rows=batch_size * num_candidates,
        )
    assert score(mentions, entities).shape == (batch_size, batch_size * num_candidates)
    assert torch.isfinite(score(mentions, entities)).all()
    mask = torch.tensor([[True, True], [True, False]])  # the last candidate lacks the task's modality
    ranked = rank_candidates(mentions, entities.view(batch_size, num_candidates, -1), mask)
    assert ranked.shape == (batch_size, num_candidates)
    assert torch.isfinite(ranked[mask]).all() and torch.isneginf(ranked[~mask]).all()
    assert ranked[mask].abs().max() <= 1 + 1e-5


def test_score_is_cosine_similarity() -> None:
    m, e = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.0], [-4.0, 3.0], [0.0, -2.0]])
    torch.testing.assert_close(score(m, e), torch.tensor([[1.0, 0.0, -0.8]]))


def test_rank_candidates_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"candidate_embeds of shape \(B, C, D\)"):
        rank_candidates(torch.zeros(2, 4), torch.zeros(2, 4))
