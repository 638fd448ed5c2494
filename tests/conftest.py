"""Shared fixtures: everything is built offline, nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random `model_type: clip` checkpoint folder (model, tokenizer, PIL image processor), seed 0."""
    from m3el_hf.modeling.tiny import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="session")
def movies_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared release of one topic, movies: 40 synthetic instances, seed 0."""
    from m3el_hf.data.prepare import PrepareConfig, prepare
    from m3el_hf.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("hub-data")
    raw = synthesize(SynthConfig(out=root / "raw", instances=40, seed=0, topics=("movies",)))
    return prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=("movies",))).out


@pytest.fixture(scope="session")
def real_photos() -> dict:
    """Real photographs bundled with matplotlib and scikit-image (no download), by name.

    RGB photos of 300–1411 px, a greyscale one (``camera``) and one with transparency (``logo``, RGBA).
    """
    import matplotlib.cbook
    import PIL.Image
    import skimage.data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos = {"grace_hopper": PIL.Image.open(f).convert("RGB")}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field", "camera", "logo"):
        photos[name] = PIL.Image.fromarray(getattr(skimage.data, name)())
    return photos
