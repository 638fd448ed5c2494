"""``m3el-hf demo``: the main job end to end on the embedded default, offline, on a CPU.

Synthesise a release, prepare it, build the tiny CLIP, train CLIP_ND and its name-only ablation with
the ``tiny-cpu`` recipe, evaluate zero-shot CLIP, name-only and CLIP_ND on all 9 tasks × 5 topics,
then write the folders that ``push-dataset`` / ``push-model`` would upload (dry runs)::

    demo-out/
      raw/  m3el/  tiny-clip/         the synthetic release, its Hub layout, the starting checkpoint
      clipnd/final  clipnd-name-only/final
      results.json  accuracy.png      every model's records, accuracy per task × topic
      publish/dataset  publish/model  exactly what would be uploaded
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import refuse_used_folder
from .tasks import TASK_NAMES, TOPICS

__all__ = ["MARGIN_PROTOCOLS", "MODEL_NAMES", "DemoConfig", "check_margins", "run_demo"]

logger = logging.getLogger(__name__)

MODEL_NAMES = ("zero-shot CLIP", "CLIP_ND (name only)", "CLIP_ND")


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``m3el-hf demo``; the defaults are the embedded default that ``make demo`` runs."""

    out: Path = field(default=Path("demo-out"), metadata={"help": "Folder for everything the demo writes."})
    instances: int = field(default=1200, metadata={"help": "Instances of the synthetic release."})
    seed: int = field(default=0, metadata={"help": "Seed of the release, the tiny CLIP and training."})
    recipe: str = field(default="tiny-cpu", metadata={"help": "Training recipe (name or YAML path)."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Cap the updates of each training run (default: the recipe's)."}
    )
    dataset_repo: str = field(default="m3el-hf/m3el-synthetic-demo", metadata={"help": "Repo id for the dry runs."})
    model_repo: str = field(default="m3el-hf/clipnd-tiny-demo", metadata={"help": "Model repo id for the dry run."})
    overwrite: bool = field(default=False, metadata={"help": "Delete a non-empty --out first (an earlier demo)."})
    min_margin: float = field(
        default=0.05,
        metadata={
            "help": "Fail unless CLIP_ND's mean accuracy beats each baseline's by at least this, over the 9 tasks "
            "and over the leak-free image tasks (the synthetic release carries description and image signal; a "
            "smaller margin means something broke)."
        },
    )

    def __post_init__(self) -> None:
        if self.instances < 50:
            raise ValueError(f"--instances must be at least 50 (10 per topic), got {self.instances}; pass 50 or more.")


def _train(config: DemoConfig, base: Path, data: Path, name: str, augment: bool) -> Path:
    from .training.config import TrainConfig, recipe_path
    from .training.loop import train

    overrides = {"max_steps": config.max_steps} if config.max_steps else {}
    recipe = TrainConfig.from_yaml(
        recipe_path(config.recipe),
        model=str(base),
        data=str(data),
        output_dir=config.out / name,
        seed=config.seed,
        augment_description=augment,
        **overrides,
    )
    return train(recipe)


def run_demo(config: DemoConfig) -> Path:
    """Run the whole demo; return the folder. Prints the table and CLIP_ND's margins over the baselines.

    Raises `ValueError` when CLIP_ND does not beat each baseline by `config.min_margin` (see `check_margins`).
    """
    from .data.prepare import PrepareConfig, prepare
    from .data.synth import SynthConfig, synthesize
    from .evaluation.command import EvaluateConfig, run_evaluate
    from .hub.push import PushDatasetConfig, PushModelConfig, run_push_dataset, run_push_model
    from .modeling.tiny import build_tiny_clip

    out = config.out
    if refuse_used_folder(out, config.overwrite):
        shutil.rmtree(out)
    raw = synthesize(SynthConfig(out=out / "raw", instances=config.instances, seed=config.seed))
    data = prepare(PrepareConfig(raw=raw, out=out / "m3el")).out
    base = build_tiny_clip(out / "tiny-clip", seed=config.seed)
    name_only = _train(config, base, data, "clipnd-name-only", augment=False)
    clipnd = _train(config, base, data, "clipnd", augment=True)
    results, plot = out / "results.json", out / "accuracy.png"
    evaluated = run_evaluate(
        EvaluateConfig(
            model=(str(base), str(name_only), str(clipnd)),
            model_name=MODEL_NAMES,
            data=str(data),
            output=results,
            topics=TOPICS,
            tasks=TASK_NAMES,
            plot=plot,
        )
    )
    run_push_dataset(PushDatasetConfig(path=data, repo=config.dataset_repo, dry_run=out / "publish" / "dataset"))
    run_push_model(
        PushModelConfig(
            path=clipnd,
            repo=config.model_repo,
            results=results,
            plot=plot,
            dataset_id=config.dataset_repo,
            model_name=MODEL_NAMES[-1],
            # The base is the tiny random CLIP this package builds, not a Hub model: its weights are ours.
            license="apache-2.0",
            unofficial_data=True,  # synthetic data: the entries say so
            dry_run=out / "publish" / "model",
        )
    )
    overall = {
        protocol: dict(zip(MODEL_NAMES, (result.mean_accuracy(protocol) for result in evaluated), strict=True))
        for protocol in MARGIN_PROTOCOLS
    }
    print(f"Everything is in {out}: results.json, accuracy.png, clipnd/final, publish/dataset, publish/model")
    check_margins(overall, config.min_margin)
    return out


MARGIN_PROTOCOLS = {
    "candidates": "over the 9 tasks",
    "candidates-leak-free": "over the 6 tasks with a mention image, leaked instances left out",
}
"""The protocols whose mean accuracy CLIP_ND must beat each baseline's by the margin, and what they average."""


def check_margins(overall: dict[str, dict[str, float]], min_margin: float) -> dict[str, dict[str, float]]:
    """Print CLIP_ND's margin over each baseline, per protocol, and return them.

    `overall` maps each of `MARGIN_PROTOCOLS` to the mean accuracy of each of `MODEL_NAMES`. Raises `ValueError`
    naming the (protocol, baseline) pairs CLIP_ND beat by less than `min_margin`.
    """
    margins = {
        protocol: {baseline: means[MODEL_NAMES[-1]] - means[baseline] for baseline in MODEL_NAMES[:-1]}
        for protocol, means in overall.items()
    }
    for protocol, by_baseline in margins.items():
        for baseline, margin in by_baseline.items():
            print(
                f"CLIP_ND vs {baseline}: {margin:+.3f} mean accuracy {MARGIN_PROTOCOLS[protocol]} "
                f"(protocol {protocol}, test split)"
            )
    short = {
        f"{baseline} ({protocol})": round(margin, 3)
        for protocol, by_baseline in margins.items()
        for baseline, margin in by_baseline.items()
        if not margin >= min_margin  # NaN (nothing evaluated) fails too
    }
    if short:
        raise ValueError(
            f"CLIP_ND beat {short} by less than --min-margin {min_margin}: the description and image signal was "
            "not learned; check the recipe and the data (or lower --min-margin for a shortened run)."
        )
    return margins
