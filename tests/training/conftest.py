"""Shared fixtures of the training tests: a prepared release, a clean Accelerate state per test, small configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState

from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.training.config import TrainConfig, recipe_path

TOPICS = ("movies", "books")


@pytest.fixture(scope="session")
def m3el_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared release of two topics: 80 synthetic instances, seed 5."""
    root = tmp_path_factory.mktemp("train-data")
    raw = synthesize(SynthConfig(out=root / "raw", instances=80, seed=5, topics=TOPICS))
    return prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=TOPICS)).out


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each `train()` in this process starts from a clean Accelerate singleton state, like a new process."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def small_config(tiny_clip_path: Path, m3el_data: Path) -> Callable[..., TrainConfig]:
    """Build a short `tiny-cpu` run of the tiny model on `m3el_data` into `output_dir`; keywords override options."""

    def make(output_dir: Path, **overrides) -> TrainConfig:
        values = {
            "model": str(tiny_clip_path),
            "data": str(m3el_data),
            "output_dir": output_dir,
            "topics": TOPICS,
            "per_device_batch_size": 8,
            "learning_rate": 1e-3,
            "max_steps": 6,
            "eval_split": None,
            "logging_steps": 1,
            "num_workers": 0,
            "cpu_threads": None,  # leave the test process's torch threads alone
            **overrides,
        }
        return TrainConfig.from_yaml(recipe_path("tiny-cpu"), **values)

    return make
