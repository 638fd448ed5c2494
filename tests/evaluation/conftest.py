"""Shared fixtures of the evaluation tests: a prepared two-topic release, its train rows (also damaged), a model."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor

TOPICS = ("movies", "books")


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    synthesize(SynthConfig(out=root / "raw", instances=60, seed=3, topics=TOPICS))
    return prepare(PrepareConfig(raw=root / "raw", out=root / "m3el", topics=TOPICS)).out


@pytest.fixture(scope="session")
def instances(release: Path) -> datasets.Dataset:
    return datasets.concatenate_datasets([datasets.load_dataset(str(release), t, split="train") for t in TOPICS])


@pytest.fixture(scope="session")
def damaged(instances: datasets.Dataset) -> datasets.Dataset:
    """Missing images on purpose: every books mention image; some movies mention, gold and non-gold images."""

    def damage(row: dict, i: int) -> dict:
        images = list(row["candidate_images"])
        if row["topic"] == "books":
            return {"mention_image": None, "candidate_images": images}
        if i % 7 == 1:
            images[row["label"]] = None
        if i % 7 == 3:
            images[(row["label"] + 1) % len(images)] = None
        return {"mention_image": None if i % 5 == 0 else row["mention_image"], "candidate_images": images}

    return instances.map(damage, with_indices=True, features=instances.features)


@pytest.fixture(scope="session")
def model(tiny_clip_path: Path) -> CLIPNDModel:
    return CLIPNDModel.from_pretrained(tiny_clip_path).eval()


@pytest.fixture(scope="session")
def processors(tiny_clip_path: Path) -> tuple:
    return load_processor(tiny_clip_path)
