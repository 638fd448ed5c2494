"""locations: Hub ids by huggingface_hub's own rules, told apart from paths."""

from __future__ import annotations

import pytest

from m3el_hf.locations import is_hub_id


@pytest.mark.parametrize(
    ("value", "owned", "bare"),
    [
        ("openai/clip-vit-base-patch32", True, True),
        ("m3el-hf/M3EL", True, True),
        ("gpt2", False, True),
        ("./runs/x", False, False),
        ("/abs/path", False, False),
        ("runs/x/final", False, False),
        ("runs/x y", False, False),
        ("me/a--b", False, False),  # the Hub forbids "--" and "..", and a name ending in ".git"
        ("me/model.git", False, False),
        ("me/-model", False, False),
        ("", False, False),
    ],
)
def test_hub_ids_follow_the_hubs_rules(value: str, owned: bool, bare: bool) -> None:
    assert (is_hub_id(value), is_hub_id(value, owner=False)) == (owned, bare)
