"""CLIP_ND in transformers' Auto classes (`m3el_hf.modeling.auto_registration`), checked in fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import m3el_hf

# Whatever public name a user touches first, transformers ends up imported with CLIP_ND registered, and nothing
# is printed: the registration never re-enters a half-initialised module (warnings are errors here).
_FIRST_TOUCH = """
import m3el_hf
m3el_hf.{name}
from transformers import AutoConfig, AutoModel
tiny = {{"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1}}
config = AutoConfig.for_model("clipnd", text_config=tiny, vision_config={{**tiny, "image_size": 8, "patch_size": 4}},
                              projection_dim=4)
model = AutoModel.from_config(config)
print(type(config).__name__, type(model).__name__, type(model) is m3el_hf.CLIPNDModel)
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def first_touch_runs() -> dict[str, subprocess.CompletedProcess]:
    """One fresh interpreter per public name, run side by side (each spends seconds importing torch)."""
    names = sorted(m3el_hf.__all__)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(names, pool.map(lambda name: _run(_FIRST_TOUCH.format(name=name)), names), strict=True))


@pytest.mark.parametrize("name", sorted(m3el_hf.__all__))
def test_registration_whichever_public_name_is_touched_first(
    first_touch_runs: dict[str, subprocess.CompletedProcess], name: str
) -> None:
    done = first_touch_runs[name]
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    assert done.stdout.split() == ["CLIPNDConfig", "CLIPNDModel", "True"]


def test_a_failing_registration_never_breaks_importing_transformers() -> None:
    code = (
        "import copy, importlib.util, logging, sys\n"
        "logging.basicConfig()\n"
        "import m3el_hf.modeling.auto_registration as registration\n"
        "copy.copy(importlib.util.find_spec('transformers').loader)  # the wrapped loader copies\n"
        "registration.REGISTERING_MODULE = 'm3el_hf.no_such_module'\n"
        "import transformers\n"
        "print(transformers.__version__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CLIP_ND is not registered with transformers' Auto classes yet" in done.stderr
    assert "No module named 'm3el_hf.no_such_module'" in done.stderr
