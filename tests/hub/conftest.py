"""Shared fixtures of the Hub tests: a checkpoint with training leftovers, and an evaluation's records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3el_hf.json_files import write_json
from m3el_hf.provenance import Provenance
from m3el_hf.tasks import TASK_NAMES

MODELS = ("zero-shot CLIP", "CLIP_ND (name only)", "CLIP_ND")


@pytest.fixture(scope="session")
def training_leftovers() -> tuple[str, ...]:
    """What training leaves in a checkpoint folder besides the model (files, relative paths): never published."""
    return ("optimizer.bin", "scheduler.pt", "random_states_0.pkl", "checkpoints/step-1/model.safetensors", ".work/x")


@pytest.fixture(scope="session")
def checkpoint(tiny_clip_path, training_leftovers, tmp_path_factory) -> Path:
    from m3el_hf import CLIPNDModel

    path = tmp_path_factory.mktemp("hub-ckpt") / "clipnd"
    CLIPNDModel.from_pretrained(tiny_clip_path).save_pretrained(path)
    for file in tiny_clip_path.iterdir():
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, path / file.name)
    summary = {  # as `train` writes it: Hub ids recorded as such, local paths reduced to their names
        "base_model": "openai/clip-vit-base-patch32",
        "dataset": None,
        "config": {
            "model": "openai/clip-vit-base-patch32",
            "data": "m3el",
            "output_dir": "out",
            "topics": ["movies"],
            "tasks": list(TASK_NAMES),
            "augment_description": True,
            "seed": 0,
        },
        "steps": 12,
        "epochs": 1.5,
        "hardware": {"device_type": "cpu", "device_name": "cpu", "num_processes": 1, "mixed_precision": "no"},
        "wall_time_s": 3.5,
        "losses": [2.0, 1.5],
    }
    write_json(path / "training_summary.json", summary)
    (path / "README.md").write_text("old card\n", encoding="utf-8")
    for junk in training_leftovers:
        (path / junk).parent.mkdir(parents=True, exist_ok=True)
        (path / junk).write_bytes(b"state")
    return path


def _record(model: str, protocol: str, topic: str, task: str, accuracy: float | None) -> dict:
    return {
        "model": model,
        "checkpoint": "clipnd" if model.startswith("CLIP_ND") else "openai/clip-vit-base-patch32",
        "protocol": protocol,
        "topic": topic,
        "task": task,
        "split": "test",
        "accuracy": accuracy,
        "hits@1": accuracy,
        "hits@3": None if accuracy is None else min(1.0, accuracy + 0.2),
        "hits@5": None if accuracy is None else min(1.0, accuracy + 0.3),
        "mrr": None if accuracy is None else accuracy + 0.05,
        "mr": None if accuracy is None else 2 - accuracy,
        "evaluated": 0 if accuracy is None else 4,
        "excluded": 4 if accuracy is None else 0,
        "leaked": 1 if protocol.endswith("leak-free") else 0,
        "ties": "expected",
        "entity_text": "full",
        "seen": True if model.startswith("CLIP_ND") else None,
    }


@pytest.fixture(scope="session")
def provenance() -> Provenance:
    """Scores of the Hub benchmark dataset me/m3el at a commit, by the built-in harness: publishable."""
    versions = {"m3el-hf": "0.1.0", "transformers": "5.0.0", "datasets": "5.0.0", "torch": "2.13.0"}
    return Provenance("builtin", versions, "me/m3el", "a" * 40, local=False, synthetic=False)


@pytest.fixture(scope="session")
def records() -> list[dict]:
    out = []
    for m, model in enumerate(MODELS):
        for protocol in ("candidates", "kb"):
            for topic in ("movies", "all"):
                for t, task in enumerate(TASK_NAMES):
                    value = None if (model, task, protocol) == ("CLIP_ND", "I-I", "kb") else 0.1 + 0.25 * m + 0.01 * t
                    out.append(
                        _record(model, protocol, topic, task, value / (2 if protocol == "kb" else 1) if value else None)
                    )
    return out
