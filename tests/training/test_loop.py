"""Training: options and recipes, learning, exact resume, LoRA with logit_scale, 2 processes, the exported folder."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file
from transformers import CLIPModel

from m3el_hf.atomic import process_umask
from m3el_hf.cli import build_parser
from m3el_hf.data.prepare import PrepareConfig, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.modeling.processing import load_processor
from m3el_hf.training import components, loop
from m3el_hf.training.checkpoints import export
from m3el_hf.training.components import build_model, load_adapter, save_adapter
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig, recipe_path
from m3el_hf.training.loop import train

REPO = Path(__file__).resolve().parents[2]
TOPICS = ("movies", "books")


@pytest.fixture(scope="session")
def m3el_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    raw = synthesize(SynthConfig(out=root / "raw", instances=80, seed=5, topics=TOPICS))
    return prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=TOPICS)).out


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each `train()` in this process starts from a clean Accelerate singleton state, like a new process."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def small_config(tiny_clip_path: Path, data: Path, output_dir: Path, **overrides) -> TrainConfig:
    values = {
        "model": str(tiny_clip_path),
        "data": str(data),
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


# Options, recipes and the command line


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"topics": ("films",)}, r"topics=\['films'\] must be some of movies"),
        ({"tasks": ("T-X",)}, r"Unknown M³EL task 'T-X'"),
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
    args = build_parser().parse_args(argv)
    before = vars(args).copy()
    config = TrainConfig.from_namespace(args)
    assert vars(args) == before  # the namespace is not mutated
    assert (config.learning_rate, config.augment_description) == (0.25, False)  # flags win
    assert (config.epochs, config.lora, config.model) == (7, True, "m")  # recipe values, not dataclass defaults
    plain = TrainConfig.add_arguments(argparse.ArgumentParser()).parse_args(["--model", "x", "--data", "y"])
    with pytest.raises(ValueError, match="command line: missing output_dir"):
        TrainConfig.from_namespace(plain)


# Learning and resuming


def test_training_steps_lower_the_loss(tiny_clip_path: Path, m3el_data: Path, tmp_path: Path) -> None:
    config = small_config(tiny_clip_path, m3el_data, tmp_path)
    accelerator = Accelerator()
    model = build_model(config)
    tokenizer, image_processor = load_processor(tiny_clip_path)
    collator = M3ELCollator.from_pretrained(model.config, tokenizer=tokenizer, image_processor=image_processor)
    loader, _ = components.build_dataloaders(config, collator)
    batch = next(iter(loader))
    optimizer, scheduler = components.build_optimizer_and_scheduler(model, config, num_updates=8, num_processes=1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    losses = [loop.training_step(accelerator, model, batch, optimizer, scheduler, config) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_same_weights(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 69 training rows, micro-batches of 8, accumulation 2: 9 micro-batches and 5 updates per epoch, the last
    # one from a single micro-batch. The run is killed in update 5, after the checkpoint of update 3: it
    # resumes mid-epoch with a partly consumed loader, then crosses into epoch 1 (new order, new task draws).
    options = {"gradient_accumulation_steps": 2, "max_steps": 7, "save_every": 3, "augment_description": False}
    options["num_workers"] = 1  # workers copy the collator per epoch: its epoch must reach them after a resume
    uninterrupted = train(small_config(tiny_clip_path, m3el_data, tmp_path / "a", **options))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    step = loop.training_step
    calls = []

    def dies_at_update_5(*args, **kwargs):
        calls.append(1)
        if len(calls) > 8:
            raise Killed
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "training_step", dies_at_update_5)
    config = small_config(tiny_clip_path, m3el_data, tmp_path / "b", resume_from="latest", **options)
    with pytest.raises(Killed):
        train(config)
    monkeypatch.setattr(loop, "training_step", step)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-3"]
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    resumed = train(config)

    expected, actual = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert max((expected[k] - actual[k]).abs().max().item() for k in expected) <= 1e-6
    summaries = [json.loads((folder / SUMMARY_NAME).read_text()) for folder in (uninterrupted, resumed)]
    assert summaries[0]["losses"] == pytest.approx(summaries[1]["losses"], abs=1e-6)
    assert summaries[0]["mentions"] == summaries[1]["mentions"]  # the counters are checkpointed too
    assert summaries[0]["steps"] == 7 and summaries[0]["losses"][-1] < summaries[0]["losses"][0]

    # The exported folder is self-contained and records the name-only setting.
    model = CLIPNDModel.from_pretrained(resumed)
    assert model.config.augment_description is False and model.config.model_type == "clipnd"
    tokenizer, image_processor = load_processor(resumed)
    assert type(image_processor).__name__ == "CLIPImageProcessorPil" and len(tokenizer) > 500
    assert M3ELCollator.from_pretrained(resumed).augment_description is False
    assert summaries[1]["hardware"]["num_processes"] == 1 and summaries[1]["seed"] == 0


def test_summary_counts_every_mention_view_and_the_speed(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = small_config(tiny_clip_path, m3el_data, tmp_path, max_steps=None, epochs=2, save_every=10**6)
    final = train(config)
    summary = json.loads((final / SUMMARY_NAME).read_text())
    assert summary["synthetic_data"] is True  # m3el_data comes from m3el-hf synth
    umask = process_umask()
    assert {p.stat().st_mode & 0o777 for p in final.iterdir()} == {0o666 & ~umask}  # not private to the user
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask
    # Reference: the task each training row draws in each epoch, and whether that task needs a missing image.
    collator = M3ELCollator.from_pretrained(tiny_clip_path, seed=config.seed)
    rows = components._load_split(config, "train")
    dropped = 0
    for collator.epoch in range(2):
        for row in rows:
            task = collator.task_for(row["id"])
            gold_image = row["candidate_images"][row["label"]]
            dropped += (task.mention_needs_image and row["mention_image"] is None) or (
                task.entity_needs_image and gold_image is None
            )
    assert dropped > 0  # the fixture's release has missing images: the count is exercised
    assert summary["mentions"] == {
        "trained": 2 * len(rows) - dropped,
        "dropped_missing_image": dropped,
        "dropped_hard_negatives": 0,
    }
    assert f"{dropped} of {2 * len(rows)} mention views" in caplog.text
    speed = summary["throughput"]
    assert speed["train_runtime_s"] > 0 and speed["validation_runtime_s"] == 0
    assert speed["train_mentions_per_second"] == pytest.approx(
        summary["mentions"]["trained"] / speed["train_runtime_s"],
        rel=5e-3,  # the runtime is rounded to 1 ms
    )


def test_a_tracker_that_is_not_installed_is_refused_before_training(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    config = small_config(tiny_clip_path, m3el_data, tmp_path, report_to=("tensorboard",))
    with pytest.raises(ValueError, match=r"tensorboard is not installed here, .*\(pip install tensorboard\)"):
        train(config)
    assert not (tmp_path / "final").exists()


def test_periodic_validation_keeps_the_best_model(tiny_clip_path: Path, m3el_data: Path, tmp_path: Path) -> None:
    config = small_config(
        tiny_clip_path, m3el_data, tmp_path, max_steps=4, eval_every=2, eval_split="test", eval_max_instances=6
    )
    summary = json.loads((train(config) / SUMMARY_NAME).read_text())["validation"]
    assert summary["split"] == "test" and summary["best_step"] in (2, 4)
    assert 0.0 <= summary["final_mean_accuracy"] <= summary["best_mean_accuracy"] <= 1.0
    assert CLIPNDModel.from_pretrained(tmp_path / "best").config.augment_description is True
    best = json.loads((tmp_path / "best" / SUMMARY_NAME).read_text())  # the summary of the moment it was kept
    assert (
        best["steps"] == best["validation"]["best_step"] == summary["best_step"]
        and len(best["losses"]) == best["steps"]
    )
    assert best["validation"]["best_mean_accuracy"] == summary["best_mean_accuracy"]


# LoRA


def test_lora_adapter_merge_and_logit_scale(tiny_clip_path: Path, m3el_data: Path, tmp_path: Path) -> None:
    config = small_config(tiny_clip_path, m3el_data, tmp_path, lora=True, lora_r=4)
    model = build_model(config)
    assert model.get_base_model().logit_scale.requires_grad
    torch.manual_seed(0)
    with torch.no_grad():  # untrained LoRA B matrices are zero: make the adapter matter
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
        model.get_base_model().logit_scale.add_(0.5)
    model.eval()
    tokens = load_processor(tiny_clip_path)[0](["john : a film", "paris"], padding=True, return_tensors="pt")
    pixels = torch.rand(2, 3, 32, 32)

    def outputs(m):
        with torch.no_grad():
            return m.encode_text(**tokens), m.encode_image(pixels), m.logit_scale.detach().clone()

    save_adapter(model, tmp_path / "adapter")
    reloaded = load_adapter(CLIPNDModel.from_pretrained(tiny_clip_path), tmp_path / "adapter").eval()
    for a, b in zip(outputs(model), outputs(reloaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    tokenizer, image_processor = load_processor(tiny_clip_path)
    folder = export(model, tokenizer, image_processor, tmp_path / "merged")
    merged = CLIPNDModel.from_pretrained(folder).eval()
    for a, b in zip(outputs(model), outputs(merged), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    stock = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        stock_text = torch.nn.functional.normalize(stock.get_text_features(**tokens).pooler_output)
    torch.testing.assert_close(stock_text, outputs(model)[0], rtol=0, atol=1e-5)
    assert stock.logit_scale.item() == pytest.approx(model.get_base_model().logit_scale.item())


def test_lora_training_trains_logit_scale(tiny_clip_path: Path, m3el_data: Path, tmp_path: Path) -> None:
    final = train(small_config(tiny_clip_path, m3el_data, tmp_path, lora=True, max_steps=2, learning_rate=0.05))
    initial = CLIPModel.from_pretrained(tiny_clip_path).logit_scale.item()
    trained = CLIPModel.from_pretrained(final).logit_scale.item()
    assert trained != pytest.approx(initial, abs=1e-4)
    assert load_file(tmp_path / "adapter" / components.LOGIT_SCALE_FILE)["logit_scale"].item() == pytest.approx(trained)


# Two processes


def test_two_processes_match_one_on_the_same_global_batch(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path
) -> None:
    common = ["--model", str(tiny_clip_path), "--data", str(m3el_data), "--topics", *TOPICS, "--max-steps", "1"]
    common += ["--eval-split", "none", "--logging-steps", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # torchrun, because `accelerate launch --cpu` runs several CPU processes only through mpirun; the
    # Accelerator reads torchrun's environment all the same (gloo on CPU).
    env["ACCELERATE_USE_CPU"] = "true"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv = [str(REPO / "trainers" / "train.py"), "--recipe", "tiny-cpu", *common]
    done = subprocess.run(
        [*launch, *argv, "--per-device-batch-size", "4", "--output-dir", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads((tmp_path / "two" / "final" / SUMMARY_NAME).read_text())
    assert two["hardware"]["num_processes"] == 2

    config = small_config(tiny_clip_path, m3el_data, tmp_path / "one", per_device_batch_size=8, max_steps=1)
    one = json.loads((train(config) / SUMMARY_NAME).read_text())
    assert two["losses"][0] == pytest.approx(one["losses"][0], abs=1e-5)
    assert two["mentions"] == one["mentions"]  # summed over both processes
