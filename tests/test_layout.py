"""The package's layout: each stage imports only the shared leaves and the stages before it (README, Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import order, lowest first: a module may import its own stage and any earlier one. The trainer validates with
# the evaluator, so evaluation comes before training in this order (the pipeline reads data → modeling →
# training → evaluation → hub).
ORDER = ("leaves", "data", "modeling", "evaluation", "training", "hub", "linking", "top")
LEAVES = {
    "m3el_hf.tasks",
    "m3el_hf.atomic",
    "m3el_hf.json_files",
    "m3el_hf.benchmark",
    "m3el_hf.arguments",
    "m3el_hf.version",
    "m3el_hf.layout",
    "m3el_hf.locations",
    "m3el_hf.images",
    "m3el_hf.progress",
    "m3el_hf.provenance",
    "m3el_hf.faults",
}
SHIPPED = {"loading_script": "m3el_hf.loading_script", "trainers": "m3el_hf.trainers"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = (*SHIPPED.get(parts[0], parts[0]).split("."), *parts[1:])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    if module in LEAVES:
        return "leaves"
    parts = module.split(".")
    if parts[1:2] == ["loading_script"]:
        return "data"
    if parts[1:2] == ["trainers"]:
        return "top"  # entry points, like the CLI
    return parts[1] if len(parts) > 2 and parts[1] in ORDER else "top"


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("m3el_hf.")}


def _sources() -> list[Path]:
    return sorted(p for folder in ("m3el_hf", *SHIPPED) for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_earlier_stages(path: Path) -> None:
    module = _module_name(path)
    rank = ORDER.index(_stage(module))
    later = sorted(target for target in _imports(path, module) if ORDER.index(_stage(target)) > rank)
    assert not later, f"{module} ({_stage(module)}) imports later stages: {later}"


def test_the_rule_sees_relative_imports() -> None:
    path = ROOT / "m3el_hf" / "hub" / "push.py"
    assert {"m3el_hf.atomic", "m3el_hf.hub.staging"} <= _imports(path, _module_name(path))
