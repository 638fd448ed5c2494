"""config: TrainConfig's validation, YAML recipes, and the command-line options of `train`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from m3el_hf.cli import build_parser
from m3el_hf.training.config import TrainConfig, recipe_path


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"topics": ("movies", "movies")}, r"Topics must be distinct and at least one, got \['movies', 'movies'\]\."),
        ({"tasks": ("T-X",)}, r"Unknown task 'T-X'"),
        ({"learning_rate": 0.0}, r"learning_rate=0.0 must be > 0"),
        ({"per_device_batch_size": 0}, r"per_device_batch_size=0 must be a positive integer"),
        ({"max_steps": -1}, r"max_steps=-1 must be a positive integer"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio=1.0 must be in \[0, 1\)"),
        ({"eval_every": -2}, r"eval_every=-2 must be >= 0"),
        ({"report_to": ("none", "tensorboard")}, r"must be 'none' alone"),
        ({"lr_scheduler": "exotic"}, r"lr_scheduler='exotic' is not supported"),
        ({"mixed_precision": "fp8"}, r"mixed_precision='fp8'"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(model="m", data="d", output_dir=tmp_path, **overrides)


def test_config_names_missing_and_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tiny-cpu.yaml: missing model, data; .* pass --model --data"):
        TrainConfig.from_yaml(recipe_path("tiny-cpu"), output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) learning_rat;"):
        TrainConfig.from_dict({"model": "m", "data": "d", "output_dir": tmp_path, "learning_rat": 1.0})
    with pytest.raises(FileNotFoundError, match=r"'no-such' is neither a file nor a packaged recipe; .*tiny-cpu"):
        recipe_path("no-such")


def test_config_warns_about_ignored_lora_options(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    TrainConfig(model="m", data="d", output_dir=tmp_path, lora_r=4)
    assert "lora_r ignored because lora=False" in caplog.text


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(model="m", data="d", output_dir=tmp_path / "run", tasks=("T-T", "I-I"), lora=True)
    config.to_yaml(tmp_path / "recipe.yaml")
    assert TrainConfig.from_yaml(tmp_path / "recipe.yaml") == config


def test_null_in_a_recipe_or_override_means_none(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text("save_total_limit: null\nmax_grad_norm: null\n", encoding="utf-8")
    config = TrainConfig.from_yaml(tmp_path / "recipe.yaml", model="m", data="d", output_dir=tmp_path, eval_split=None)
    assert (config.save_total_limit, config.max_grad_norm, config.eval_split) == (None, None, None)
    assert TrainConfig.from_yaml(tmp_path / "recipe.yaml", model="m", data="d", output_dir=tmp_path).eval_split == (
        "validation"
    )


@pytest.mark.parametrize("name", ["tiny-cpu", "clipnd-vit-b-32"])
def test_packaged_recipes_load(name: str, tmp_path: Path) -> None:
    config = TrainConfig.from_yaml(recipe_path(name), model="m", data="d", output_dir=tmp_path)
    assert config.augment_description


def test_explicit_flags_override_the_recipe_and_only_they_do(tmp_path: Path) -> None:
    recipe = TrainConfig(model="m", data="d", output_dir=tmp_path, epochs=7, learning_rate=0.5, lora=True)
    recipe.to_yaml(tmp_path / "recipe.yaml")
    argv = ["train", "--recipe", str(tmp_path / "recipe.yaml"), "--learning-rate", "0.25", "--no-augment-description"]
    args = build_parser(argv).parse_args(argv)
    before = vars(args).copy()
    config = TrainConfig.from_namespace(args)
    assert vars(args) == before  # the namespace is not mutated
    assert (config.learning_rate, config.augment_description) == (0.25, False)  # flags win
    assert (config.epochs, config.lora, config.model) == (7, True, "m")  # recipe values, not dataclass defaults
    plain = TrainConfig.add_arguments(argparse.ArgumentParser()).parse_args(["--model", "x", "--data", "y"])
    with pytest.raises(ValueError, match="command line: missing output_dir"):
        TrainConfig.from_namespace(plain)
