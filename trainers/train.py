"""``accelerate launch -m m3el_hf.trainers.train --recipe tiny-cpu --model ... --data ... --output-dir ...``.

That form works from any folder; also runnable as ``accelerate launch trainers/train.py`` from the repository's
root and as ``m3el-hf train``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from torch.distributed import DistError

from m3el_hf.cli import user_errors
from m3el_hf.progress import configure_logging
from m3el_hf.training.config import TrainConfig
from m3el_hf.training.loop import run_train

__all__ = ["lost_a_process", "lost_process_message", "main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the options in `argv` (default: the process arguments) say; return the exit status."""
    parser = TrainConfig.add_arguments(
        argparse.ArgumentParser(prog="train.py", description="Train CLIP_ND on M³EL with Accelerate.")
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress bars and no log below warnings.")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_namespace(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    configure_logging(quiet=args.quiet)
    try:
        run_train(config)
    except user_errors() as error:  # bad data or options found once running: one clear line, as `m3el-hf train`
        logger.debug("train.py failed", exc_info=True)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if not lost_a_process(error):
            raise
        logger.debug("train.py lost a process", exc_info=True)
        print(f"{parser.prog}: error: {lost_process_message(error, config)}", file=sys.stderr)
        return 1
    return 0


# How the backends word a collective whose peer is gone: gloo raises a plain RuntimeError from the functional
# collectives (the loss's autograd all-gather), NCCL a DistBackendError after the process-group timeout.
_LOST_PEER = re.compile(r"Connection (reset|closed) by peer|Broken pipe|Timed out|timed out|Watchdog caught")


def lost_a_process(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another process of the job stopped."""
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    return distributed and (isinstance(error, DistError) or bool(_LOST_PEER.search(str(error))))


def lost_process_message(error: BaseException, config: TrainConfig) -> str:
    """One line for a collective that failed because another process of the job stopped or was killed."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    lost = f"rank {1 - rank}" if world == 2 else f"another of the {world} ranks"
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"rank {rank} of {world} lost {lost}, which stopped or was killed ({cause}). Checkpoints already written "
        f"under {config.output_dir / 'checkpoints'} are intact: relaunch with --resume-from latest."
    )


if __name__ == "__main__":
    sys.exit(main())
