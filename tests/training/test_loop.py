"""train(), end to end: what the summary counts, trackers, validation keeping the best model, LoRA, 2 processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import CLIPModel

from m3el_hf.atomic import process_umask
from m3el_hf.hub.model_card import read_summary
from m3el_hf.json_files import FormatVersionError
from m3el_hf.modeling.collator import M3ELCollator
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.training import components
from m3el_hf.training.config import SUMMARY_NAME, TrainConfig
from m3el_hf.training.loop import train, training_report

REPO = Path(__file__).resolve().parents[2]
TOPICS = ("movies", "books")  # those of the `m3el_data` fixture (conftest.py)


@pytest.mark.parametrize("drop_leaked", [False, True])
def test_summary_counts_every_mention_view_and_the_speed(
    tiny_clip_path: Path,
    small_config: Callable[..., TrainConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    drop_leaked: bool,
) -> None:
    caplog.set_level("INFO")
    config = small_config(tmp_path, max_steps=None, epochs=2, save_every=10**6, drop_leaked=drop_leaked)
    final = train(config)
    text = (final / SUMMARY_NAME).read_text()
    summary = json.loads(text)
    assert summary.pop("format_version") == 1 and read_summary(final) == summary
    assert summary["synthetic_data"] is True  # m3el_data comes from m3el-hf synth
    # Published with the model: local folders become their names and are not taken for Hub ids.
    assert (summary["base_model"], summary["dataset"]) == (None, None)
    assert summary["config"]["model"] == tiny_clip_path.name and summary["config"]["output_dir"] == tmp_path.name
    assert str(tmp_path.parent) not in text and str(tiny_clip_path.parent) not in text
    umask = process_umask()
    assert {p.stat().st_mode & 0o777 for p in final.iterdir()} == {0o666 & ~umask}  # not private to the user
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask
    # Reference: the task each training row draws in each epoch, and whether that task needs a missing image.
    collator = M3ELCollator.from_pretrained(tiny_clip_path, seed=config.seed)
    rows = components._load_split(config, "train")
    dropped = leaked = 0
    for collator.epoch in range(2):
        for row in rows:
            task = collator.task_for(row["id"])
            if drop_leaked and task.mention_needs_image and row["mention_image_leak"] in ("copy", "near"):
                leaked += 1
                continue
            gold_image = row["candidate_images"][row["label"]]
            dropped += (task.mention_needs_image and row["mention_image"] is None) or (
                task.entity_needs_image and gold_image is None
            )
    assert dropped > 0  # the fixture's release has missing images: the count is exercised
    assert (leaked > 0) is drop_leaked  # and it has mention images that copy the gold's
    assert summary["mentions"] == {
        "trained": 2 * len(rows) - dropped - leaked,
        "dropped_missing_image": dropped,
        "dropped_hard_negatives": 0,
        "dropped_leaked": leaked,
    }
    assert f"{dropped} of {2 * len(rows)} mention views" in caplog.text
    assert (f"{leaked} of {2 * len(rows)} mention views" in caplog.text) is drop_leaked
    speed = summary["throughput"]
    assert speed["train_runtime_s"] > 0 and speed["validation_runtime_s"] == 0
    assert speed["train_mentions_per_second"] == pytest.approx(
        summary["mentions"]["trained"] / speed["train_runtime_s"],
        rel=5e-3,  # the runtime is rounded to 1 ms
    )


def test_a_tracker_that_is_not_installed_is_refused_before_training(
    small_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    config = small_config(tmp_path, report_to=("tensorboard",))
    with pytest.raises(ValueError, match=r"tensorboard is not installed here, .*\(pip install tensorboard\)"):
        train(config)
    assert not (tmp_path / "final").exists()


def test_periodic_validation_keeps_the_best_model(small_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    config = small_config(tmp_path, max_steps=4, eval_every=2, eval_split="test", eval_max_instances=6)
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


def test_lora_training_trains_logit_scale(
    tiny_clip_path: Path, small_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    final = train(small_config(tmp_path, lora=True, max_steps=2, learning_rate=0.05))
    initial = CLIPModel.from_pretrained(tiny_clip_path).logit_scale.item()
    trained = CLIPModel.from_pretrained(final).logit_scale.item()
    assert trained != pytest.approx(initial, abs=1e-4)
    assert load_file(tmp_path / "adapter" / components.LOGIT_SCALE_FILE)["logit_scale"].item() == pytest.approx(trained)


# Two processes


@pytest.mark.distributed
def test_two_processes_match_one_on_the_same_global_batch(
    tiny_clip_path: Path, m3el_data: Path, small_config: Callable[..., TrainConfig], tmp_path: Path
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

    config = small_config(tmp_path / "one", per_device_batch_size=8, max_steps=1)
    one = json.loads((train(config) / SUMMARY_NAME).read_text())
    assert two["losses"][0] == pytest.approx(one["losses"][0], abs=1e-5)
    assert two["mentions"] == one["mentions"]  # summed over both processes


@pytest.mark.slow
def test_train_says_what_it_did_and_never_mixes_two_runs(
    tiny_clip_path: Path, m3el_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from m3el_hf.cli import main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "tiny-cpu", "--model", str(tiny_clip_path), "--data", str(m3el_data)]
    argv += ["--topics", *TOPICS, "--output-dir", str(run), "--per-device-batch-size", "8", "--eval-every", "2"]
    assert main([*argv, "--max-steps", "4", "--save-every", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Trained 4 updates" in printed and "mentions/s" in printed and "validation mean accuracy: last" in printed
    assert f"final model: {run / 'final'}" in printed and f"best model:  {run / 'best'}" in printed
    assert f"Next: m3el-hf evaluate --model {run / 'final'} --data {m3el_data}" in printed
    first = json.loads((run / "final" / SUMMARY_NAME).read_text())
    assert (run / "checkpoints").is_dir()

    assert main([*argv, "--max-steps", "1"]) == 2  # refused: the folder holds a run
    refusal = "already exists and is not empty; pass --overwrite to replace it, --resume-from latest to continue it"
    assert refusal in capsys.readouterr().err
    assert json.loads((run / "final" / SUMMARY_NAME).read_text()) == first  # untouched

    assert main([*argv, "--max-steps", "1", "--overwrite"]) == 0  # replaced as a whole: no checkpoint of the old one
    assert json.loads((run / "final" / SUMMARY_NAME).read_text())["steps"] == 1
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def test_the_report_refuses_a_summary_of_another_format_version(tmp_path: Path) -> None:
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / SUMMARY_NAME).write_text(json.dumps({"steps": 1}), encoding="utf-8")
    config = TrainConfig(model="m", data="d", output_dir=tmp_path / "run")
    with pytest.raises(FormatVersionError, match=r"training_summary\.json has no format_version; this m3el-hf reads"):
        training_report(final, config)


def test_train_warns_of_an_ignored_option_once(
    small_config: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(small_config(tmp_path / "run", max_steps=1, topics=None, lora_r=4))  # the config warns as it is made
    assert caplog.text.count("lora_r ignored because lora=False") == 1
