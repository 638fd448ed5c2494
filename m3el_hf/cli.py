"""The ``m3el-hf`` command line: one subcommand per job, options generated from configuration dataclasses."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from .arguments import add_dataclass_arguments, dataclass_from_namespace

__all__ = ["COMMANDS", "Command", "main", "user_errors"]


@dataclass(frozen=True)
class Command:
    """A subcommand: the module holding it, its configuration dataclass and the function it runs."""

    module: str
    config: str
    run: str
    help: str

    def load(self) -> tuple[type, Callable]:
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.run)


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "m3el_hf.demo",
        "DemoConfig",
        "run_demo",
        "The main job, offline on a CPU: synth, prepare, train CLIP_ND and baselines, evaluate, dry-run publish.",
    ),
    "synth": Command(
        "m3el_hf.data.synth",
        "SynthConfig",
        "synthesize",
        "Write a synthetic raw release in the exact M³EL format (for tests, demos and benchmarks).",
    ),
    "prepare": Command(
        "m3el_hf.data.prepare",
        "PrepareConfig",
        "run_prepare",
        "Turn a raw M³EL release into the Hub layout (Parquet + dataset card) that load_dataset reads.",
    ),
    "show": Command(
        "m3el_hf.data.show",
        "ShowConfig",
        "show",
        "Load a prepared M³EL folder with stock datasets and print its splits, a row and the card's audit.",
    ),
    "evaluate": Command(
        "m3el_hf.evaluation.command",
        "EvaluateConfig",
        "run_evaluate",
        "Evaluate CLIP / CLIP_ND checkpoints on every task × topic (candidate list or whole KB); write JSON.",
    ),
    "train": Command(
        "m3el_hf.training.loop",
        "TrainConfig",
        "train",
        "Train CLIP_ND from a recipe (one process here; `accelerate launch trainers/train.py` for several).",
    ),
    "push-dataset": Command(
        "m3el_hf.hub.push",
        "PushDatasetConfig",
        "run_push_dataset",
        "Push a prepared M³EL folder to a Hub dataset repo (card + eval.yaml: a benchmark), or --dry-run it.",
    ),
    "push-model": Command(
        "m3el_hf.hub.push",
        "PushModelConfig",
        "run_push_model",
        "Push a CLIP_ND checkpoint with its model card and leaderboard entries, or only .eval_results/ as a PR.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m3el-hf",
        description="M³EL multi-modal entity linking and CLIP_ND on the Hugging Face stack.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        config_cls, _ = command.load()
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        # A config class may define its own options (`TrainConfig`: a recipe that only explicit flags override).
        getattr(config_cls, "add_arguments", partial(add_dataclass_arguments, cls=config_cls))(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input, options or a refused Hub request: reported in one line, exit 2."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    return ValueError, FileNotFoundError, FileExistsError, HfHubHTTPError, OfflineModeIsEnabled


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``m3el-hf`` with `argv` (default: the process arguments); return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    config_cls, run = COMMANDS[args.command].load()
    try:
        from_namespace = getattr(config_cls, "from_namespace", partial(dataclass_from_namespace, config_cls))
        config = from_namespace(args)
        run(config)
    except user_errors() as error:
        # User errors (bad input, bad options, a refused Hub request) get one clear line, not a traceback.
        print(f"m3el-hf {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
