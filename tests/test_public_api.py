"""The public API: one list in m3el_hf/__init__.py, imported lazily; helpers stay in their modules."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import m3el_hf


def test_every_public_name_is_its_module_object() -> None:
    for module, names in m3el_hf._EXPORTS.items():
        for name in names:
            assert getattr(m3el_hf, name) is getattr(importlib.import_module(f"m3el_hf.{module}"), name), name
    assert sorted(m3el_hf.__all__) == sorted([*m3el_hf._MODULE_OF, "__version__"])
    assert set(m3el_hf.__all__) <= set(dir(m3el_hf))
    with pytest.raises(AttributeError, match="no attribute 'CLIPND'"):
        m3el_hf.CLIPND  # noqa: B018


def test_the_api_is_the_pipeline_verbs_and_what_a_user_holds() -> None:
    verbs = {"prepare", "train", "evaluate_model", "push_dataset", "push_model"}
    objects = {"PrepareConfig", "TrainConfig", "CLIPNDModel", "CLIPNDConfig", "M3ELCollator", "EntityLinker"}
    assert verbs | objects | {"EntityIndex", "TASKS", "TOPICS"} <= set(m3el_hf.__all__)
    assert callable(m3el_hf.prepare) and callable(m3el_hf.train) and callable(m3el_hf.push_model)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("m3el_hf.modeling.collator", "qid_to_int"),
        ("m3el_hf.modeling.modeling_clipnd", "score"),
        ("m3el_hf.modeling.modeling_clipnd", "rank_candidates"),
        ("m3el_hf.modeling.tiny", "build_tiny_clip"),
        ("m3el_hf.evaluation.metrics", "ranking_metrics"),
        ("m3el_hf.evaluation.metrics", "evaluate_module_path"),
        ("m3el_hf.data.features", "task_columns"),
        ("m3el_hf.tasks", "get_task"),
    ],
)
def test_helpers_come_from_their_modules_only(module: str, name: str) -> None:
    assert callable(getattr(importlib.import_module(module), name))
    assert name not in m3el_hf.__all__ and not hasattr(m3el_hf, name)


def test_import_m3el_hf_imports_no_torch_and_adds_no_import_hook() -> None:
    code = (
        "import json, sys\n"
        "meta_path = list(sys.meta_path)\n"
        "import m3el_hf\n"
        "heavy = sorted({'torch', 'transformers', 'datasets'} & set(sys.modules))\n"
        "print(json.dumps({'heavy': heavy, 'same_meta_path': sys.meta_path == meta_path}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"heavy": [], "same_meta_path": True}
