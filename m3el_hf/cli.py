"""The ``m3el-hf`` command line: one subcommand per job, options generated from configuration dataclasses."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from .arguments import add_dataclass_arguments, dataclass_from_namespace
from .faults import INTERRUPTED, debugging, fault_line, output_of
from .progress import configure_logging
from .version import __version__

__all__ = ["COMMANDS", "Command", "main", "user_errors"]


@dataclass(frozen=True)
class Command:
    """A subcommand: the module holding it, its configuration dataclass and the function it runs."""

    module: str
    config: str
    run: str
    help: str
    example: str
    left: str = "nothing was written"
    """What the command leaves when it stops part way (Ctrl-C, a full disk); ``{config}`` is its configuration."""

    def load(self) -> tuple[type, Callable]:
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.run)


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "m3el_hf.demo",
        "DemoConfig",
        "run_demo",
        "The main job, offline on a CPU: synth, prepare, train CLIP_ND and baselines, evaluate, dry-run publish.",
        "m3el-hf demo --out demo-out",
    ),
    "synth": Command(
        "m3el_hf.data.synth",
        "SynthConfig",
        "synthesize",
        "Write a synthetic raw release in the exact M³EL format (for tests, demos and benchmarks).",
        "m3el-hf synth --out raw --instances 1200 --seed 0",
    ),
    "prepare": Command(
        "m3el_hf.data.prepare",
        "PrepareConfig",
        "run_prepare",
        "Turn a raw M³EL release into the Hub layout (Parquet + dataset card) that load_dataset reads.",
        "m3el-hf prepare --raw path/to/M3EL --out m3el",
    ),
    "show": Command(
        "m3el_hf.data.show",
        "ShowConfig",
        "show",
        "Load a prepared M³EL folder with stock datasets and print its splits, a row and the card's audit.",
        "m3el-hf show m3el --config movies-I-T",
    ),
    "evaluate": Command(
        "m3el_hf.evaluation.command",
        "EvaluateConfig",
        "run_evaluate",
        "Evaluate CLIP / CLIP_ND checkpoints on every task × topic (candidate list or whole KB); write JSON.",
        "m3el-hf evaluate --model runs/clipnd/final --data m3el --output results.json --plot accuracy.png",
    ),
    "train": Command(
        "m3el_hf.training.loop",
        "TrainConfig",
        "run_train",
        "Train CLIP_ND from a recipe (one process here; `accelerate launch -m m3el_hf.trainers.train` for several).",
        "m3el-hf train --recipe tiny-cpu --model demo-out/tiny-clip --data demo-out/m3el --output-dir runs/tiny",
        "{config.output_dir} keeps its last complete checkpoint: run the same command with --resume-from latest "
        "to continue from it",
    ),
    "generalization": Command(
        "m3el_hf.generalization",
        "GeneralizationConfig",
        "run_generalization",
        "Leave-one-topic-out: train without each topic, score it on that topic beside the all-topics model.",
        "m3el-hf generalization --model-base demo-out/tiny-clip --data demo-out/m3el --recipe tiny-cpu --out loto",
    ),
    "index": Command(
        "m3el_hf.linking.command",
        "IndexConfig",
        "run_index",
        "Build an entity index: embed a knowledge base once with a checkpoint, searchable with FAISS.",
        "m3el-hf index build --model runs/clipnd/final --kb m3el --config all-kb --out index-all-kb",
    ),
    "link": Command(
        "m3el_hf.linking.command",
        "LinkConfig",
        "run_link",
        "Link a mention (text, and optionally a picture) to the entities of an index or a knowledge base.",
        "m3el-hf link --model runs/clipnd/final --index index-all-kb --mention Paris --sentence 'Paris is in France.'",
    ),
    "push-dataset": Command(
        "m3el_hf.hub.push",
        "PushDatasetConfig",
        "run_push_dataset",
        "Push a prepared M³EL folder to a Hub dataset repo (card + eval.yaml: a benchmark), or --dry-run it.",
        "m3el-hf push-dataset m3el --repo ORG/m3el --dry-run staged",
    ),
    "push-model": Command(
        "m3el_hf.hub.push",
        "PushModelConfig",
        "run_push_model",
        "Push a CLIP_ND checkpoint with its model card and leaderboard entries, or only .eval_results/ as a PR.",
        "m3el-hf push-model runs/clipnd/final --repo ORG/clipnd --results results.json --dataset-id ORG/m3el",
    ),
    "app": Command(
        "m3el_hf.app",
        "AppConfig",
        "run_app",
        "Link mentions in the browser: a Gradio page over a checkpoint and its entity indexes (m3el-hf[app]).",
        "m3el-hf app --model runs/clipnd/final --index index-all-kb --results results.json",
    ),
}


_QUIET_HELP = (
    "No progress bars and no log below warnings (also TQDM_DISABLE=1 or HF_DATASETS_DISABLE_PROGRESS_BARS=1); "
    "results and errors are still printed."
)

_DEBUG_HELP = "Show the traceback of a fault, for a bug report (also M3EL_HF_DEBUG=1)."


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: every command listed, but only the command `argv` names gets its options.

    Building a command's options imports its module, and some import torch: the other commands' modules are not
    imported, so ``m3el-hf --help`` and the data commands start without torch or transformers.
    """
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)  # the top-level options take no value
    parser = argparse.ArgumentParser(
        prog="m3el-hf",
        description="M³EL multi-modal entity linking and CLIP_ND on the Hugging Face stack.",
        epilog="Example: m3el-hf demo  (then m3el-hf COMMAND --help for each command's options)",
    )
    parser.add_argument("--version", action="version", version=f"m3el-hf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    parser.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog=f"Example:\n  {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        if name == chosen:
            config_cls, _ = command.load()
            # A config class may define its own options (`TrainConfig`: a recipe that only explicit flags override).
            getattr(config_cls, "add_arguments", partial(add_dataclass_arguments, cls=config_cls))(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input, options or a refused Hub request: reported in one line, exit 2."""
    from huggingface_hub.errors import HfHubHTTPError

    # ConnectionError covers huggingface_hub's OfflineModeIsEnabled.
    return ValueError, FileNotFoundError, FileExistsError, ConnectionError, HfHubHTTPError


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``m3el-hf`` with `argv` (default: the process arguments); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    command = COMMANDS[args.command]
    config_cls, run = command.load()
    config = None
    try:
        from_namespace = getattr(config_cls, "from_namespace", partial(dataclass_from_namespace, config_cls))
        config = from_namespace(args)
        run(config)
    except BaseException as error:
        if debugging(args.debug):
            raise
        # A fault of the machine or the files (Ctrl-C, a full disk, permissions, a damaged shard) and bad input,
        # options or a refused Hub request get one line naming the file and what to do; a bug, its traceback.
        left = command.left.format(config=config) if config is not None else "nothing was written"
        line = fault_line(error, left, output_of(config))
        if line is None and isinstance(error, user_errors()):
            line = str(error)
        if line is None:
            raise
        print(f"m3el-hf {args.command}: error: {line}", file=sys.stderr)
        return INTERRUPTED if isinstance(error, KeyboardInterrupt) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
