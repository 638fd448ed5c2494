"""``accelerate launch trainers/train.py --recipe tiny-cpu --model ... --data ... --output-dir ...``.

Also runnable as ``accelerate launch -m m3el_hf.trainers.train`` and as ``m3el-hf train``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from m3el_hf.cli import user_errors
from m3el_hf.training.config import TrainConfig
from m3el_hf.training.loop import train

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Train as the options in `argv` (default: the process arguments) say; return the exit status."""
    parser = TrainConfig.add_arguments(
        argparse.ArgumentParser(prog="train.py", description="Train CLIP_ND on M³EL with Accelerate.")
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_namespace(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(config)
    except user_errors() as error:  # bad data or options found once running: one clear line, as `m3el-hf train`
        logger.debug("train.py failed", exc_info=True)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
